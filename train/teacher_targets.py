"""The teacher's 4x output of every training clip, computed once, as a second target for the student (issue 26).

Distillation (``distill`` > 0): beside the L2 to the ground truth, the student's output is pulled towards what the
teacher (BasicVSR, ``model.teacher``) makes of the same clean low-res frames. The teacher is bidirectional: its
frame i depends on the whole clip, so ``clip_targets`` runs it once over each training clip's whole low-res frames
(clean bicubic x1/4, the ``bicubic`` degradation's), and ``train.data.TrainClips`` cuts a window's targets out with
the window's frames, crop and flips. A crop's low-res frames are made from the crop, the teacher's from the whole
frame: the two differ only within the bicubic kernel's reach of the crop's edge.

``TeacherTargets`` keeps them under ``runs/teacher_targets/<key>/`` (one uint8 ``.npy`` per clip, memory-mapped
when read, so a run and its DataLoader workers share the pages) keyed by the clips' frames (their bytes) and the
teacher's weights, with the CPU time they took: a run carries that time whether it computed them or found them,
like ``init_from``'s (in the model's CPU-hours, not in the run's own ``max_cpu_minutes``). The teacher takes about a
CPU-hour over the shared training clips (one thread, bf16), so the folder is written clip by clip and an
interrupted computation goes on where it stopped.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn as nn

from common.files import atomic_path
from common.paths import runs_dir
from model.inference import super_resolve, to_tensor
from model.precision import resolve_precision
from model.teacher import load_teacher
from train.config import TrainConfig
from train.cputime import process_cpu_seconds
from train.data import Sample
from train.degradations import degrade
from train.flows import files_digest, weights_digest

log = logging.getLogger(__name__)

STATE = "state.json"  # clips written so far and their CPU seconds, after each clip: an interrupted run goes on


def clip_targets(teacher: nn.Module, clip: np.ndarray, precision: str) -> np.ndarray:
    """uint8 (t, H, W, 3) clip, H and W multiples of 4 -> the teacher's uint8 (t, H, W, 3) output of its clean
    low-res frames."""
    lr = degrade(to_tensor(clip), "bicubic")  # (t, 3, h, w), 8-bit values
    frames = lr.mul(255).round_().to(torch.uint8).permute(0, 2, 3, 1).numpy()  # (t, h, w, 3)
    return np.stack(list(super_resolve(teacher, frames, cut_threshold=None, precision=precision)))


class TeacherTargets:
    """The teacher's targets for a list of clips, computed once and kept under ``runs/teacher_targets/<key>/``; the
    key covers the clips' files (their content), the teacher's weights and the precision."""

    def __init__(self, teacher: nn.Module, precision: str):
        self.teacher, self.precision = teacher, precision

    def key(self, frames: Sequence[Sequence]) -> str:
        return files_digest(frames, f"teacher {weights_digest(self.teacher)} {self.precision}")

    def load_or_compute(
        self, frames: Sequence[Sequence], clips: Sequence[np.ndarray]
    ) -> tuple[list[np.ndarray], float]:
        """Targets of ``clips`` (uint8 (t, H, W, 3); ``frames`` are their files), memory-mapped, and the CPU
        seconds they took to compute (now or when they were cached)."""
        folder = runs_dir() / "teacher_targets" / self.key(frames)
        state = json.loads((folder / STATE).read_text()) if (folder / STATE).is_file() else None
        if state is None or state["done"] < len(clips):  # new, or interrupted: go on from the last clip written
            state = state or {"done": 0, "cpu_seconds": 0.0}
            self.teacher.eval()
            for i in range(state["done"], len(clips)):
                cpu0 = process_cpu_seconds()
                with atomic_path(folder / f"{i}.npy") as tmp, open(tmp, "wb") as f:
                    np.save(f, clip_targets(self.teacher, clips[i], self.precision))
                state = {"done": i + 1, "cpu_seconds": state["cpu_seconds"] + process_cpu_seconds() - cpu0}
                with atomic_path(folder / STATE) as tmp:
                    tmp.write_text(json.dumps(state))
                log.info("teacher targets: clip %d of %d (%d frames of %dx%d)", i + 1, len(clips), *clips[i].shape[:3])
        targets = [np.load(folder / f"{i}.npy", mmap_mode="r") for i in range(len(clips))]
        for i, (t, c) in enumerate(zip(targets, clips, strict=True)):
            if t.shape != c.shape:
                raise ValueError(f"{folder}/{i}.npy is {t.shape}, its clip {c.shape}: delete {folder} and rerun")
        log.info("teacher targets of %d clips in %s (computed in %.0f CPU-s)", len(clips), folder, state["cpu_seconds"])
        return targets, float(state["cpu_seconds"])


def run_targets(
    cfg: TrainConfig, samples: Sequence[Sample], clips: Sequence[np.ndarray]
) -> tuple[list, float, str]:
    """A run's targets (``cfg.distill_teacher`` at the run's precision on the CPU, where the teacher runs) for its
    training ``samples`` and their ``clips``, with their CPU seconds and their cache's key: what ``train.trainer``
    and ``python -m train.recipe targets`` both call."""
    cache = TeacherTargets(load_teacher(cfg.distill_teacher), resolve_precision(cfg.precision, torch.device("cpu")))
    frames = [s.frames for s in samples]
    return *cache.load_or_compute(frames, clips), cache.key(frames)
