"""A frozen flow network's flows, computed once per training clip instead of once per training step.

A frozen flow (``flow_lr_scale: 0``, e.g. BasicVSR's SPyNet in ``frvsr-spynet``) does not learn, so its flow
between two frames is the same at every step that shows them: ``clip_flows`` runs it once over each
training clip's whole low-res frames (clean bicubic x1/4, padded exactly as ``FRVSR.flows`` pads them, at the
run's precision), in both time directions, and ``window_flows`` cuts any training window's flows out of that
(``train.data.TrainClips`` applies the window's flips to them with ``flip_flows``). On the whole frame the
flow also sees the context it sees when serving, where a 48-pixel training crop showed SPyNet little.

``FlowCache`` keeps them on disk under ``runs/flow_cache/`` keyed by the clips' frames (their bytes, not their
paths or times) and the flow network's weights, with the CPU time they took: a run charges that time to its own
count whether it computed them or found them (``train.trainer``), so a CPU-hour figure never leaves it out.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from common.files import atomic_path
from common.paths import runs_dir
from model.frvsr import pad_to_multiple
from model.inference import to_tensor
from model.precision import autocast
from train.cputime import process_cpu_seconds
from train.degradations import degrade

log = logging.getLogger(__name__)

PAIRS_PER_CALL = 4  # frame pairs per flow call: bounds memory on 1024-px clips


@dataclass
class ClipFlows:
    """One clip's flows in low-res pixels, float16, (t, 2, h, w) each with h, w = the clip's low-res size:
    ``fwd[i]`` warps frame i-1 onto frame i, ``bwd[i]`` warps frame i onto frame i-1 (index 0 is zeros)."""

    fwd: torch.Tensor
    bwd: torch.Tensor


def clip_flows(fnet: nn.Module, clip: np.ndarray, precision: str) -> ClipFlows:
    """uint8 (t, H, W, 3) clip, H and W multiples of 4 -> its ``ClipFlows`` from ``fnet`` (cur, prev) -> flow."""
    lr = degrade(to_tensor(clip), "bicubic")  # (t, 3, h, w), the clean input the recurrence sees
    t, _, h, w = lr.shape
    padded = pad_to_multiple(lr)  # as FRVSR.flows pads a frame before its flow
    fwd, bwd = torch.zeros(t, 2, h, w, dtype=torch.float16), torch.zeros(t, 2, h, w, dtype=torch.float16)
    with torch.inference_mode(), autocast(precision, lr.device):
        for start in range(1, t, PAIRS_PER_CALL):
            idx = torch.arange(start, min(t, start + PAIRS_PER_CALL))
            cur, prev = padded[idx], padded[idx - 1]
            fwd[idx] = fnet(cur, prev).float()[..., :h, :w].half()
            bwd[idx] = fnet(prev, cur).float()[..., :h, :w].half()
    return ClipFlows(fwd, bwd)


def window_flows(flows: ClipFlows, times: Sequence[int]) -> torch.Tensor:
    """The flows of a window of frame indices that step by +-1 (``train.data.pingpong_indices``, maybe reversed):
    (len(times), 2, h, w) float32, zeros for its first frame (it warps nothing: the recurrence starts from zeros)."""
    out = torch.zeros(len(times), *flows.fwd.shape[1:])
    for k in range(1, len(times)):
        a, b = times[k - 1], times[k]
        if b == a + 1:
            out[k] = flows.fwd[b]
        elif b == a - 1:
            out[k] = flows.bwd[a]
        else:
            raise ValueError(f"window frames {a} -> {b} are not neighbours")
    return out


def flip_flows(flow: torch.Tensor, hflip: bool, vflip: bool, transpose: bool) -> torch.Tensor:
    """(t, 2, h, w) flows of a window -> the flows of the same window flipped left-right, up-down and then
    transposed (as ``TrainClips`` flips its frames): a mirrored axis negates its component, a transpose swaps
    the axes and the components."""
    if hflip:
        flow = flow.flip(-1) * torch.tensor([-1.0, 1.0]).view(1, 2, 1, 1)
    if vflip:
        flow = flow.flip(-2) * torch.tensor([1.0, -1.0]).view(1, 2, 1, 1)
    if transpose:
        flow = flow.transpose(-1, -2).flip(1)
    return flow.contiguous()


def weights_digest(net: nn.Module) -> str:
    """A short hash of a network's weights (a cache key's part)."""
    h = hashlib.sha256()
    for name, tensor in sorted(net.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().float().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def files_digest(frames: Sequence[Sequence], prefix: str) -> str:
    """A cache key: ``prefix`` and the clips' frame files (their names and bytes, clip by clip). By content, not
    by path or modification time: a dataset copied afresh (a new machine, a re-provisioned ``../shared``) keeps
    its keys, and a frame rewritten with other pixels gets a new one."""
    h = hashlib.sha256(prefix.encode())
    for clip in frames:
        h.update(b"\0clip")
        for path in clip:
            h.update(f"\0{Path(path).name}\0".encode())
            h.update(Path(path).read_bytes())
    return h.hexdigest()[:24]


class FlowCache:
    """``ClipFlows`` for a list of clips, computed once and kept under ``runs/flow_cache/<key>.pt``; the key
    covers the frames' files (their content), the flow network's weights and the precision."""

    def __init__(self, fnet: nn.Module, precision: str):
        self.fnet, self.precision = fnet, precision

    def key(self, frames: Sequence[Sequence]) -> str:
        return files_digest(frames, f"{weights_digest(self.fnet)} {self.precision}")

    def load_or_compute(self, frames: Sequence[Sequence], clips: Sequence[np.ndarray]) -> tuple[list[ClipFlows], float]:
        """Flows of ``clips`` (uint8 (t, H, W, 3), H and W multiples of 4; ``frames`` are their files) and the
        CPU seconds they took to compute (now or when they were cached)."""
        path = runs_dir() / "flow_cache" / f"{self.key(frames)}.pt"
        if path.is_file():
            saved = torch.load(path, weights_only=True)
            log.info("flows of %d clips from %s (computed in %.0f CPU-s)", len(clips), path, saved["cpu_seconds"])
            return [ClipFlows(f, b) for f, b in zip(saved["fwd"], saved["bwd"], strict=True)], saved["cpu_seconds"]
        cpu0 = process_cpu_seconds()
        self.fnet.eval()
        flows = [clip_flows(self.fnet, clip, self.precision) for clip in clips]
        cpu = process_cpu_seconds() - cpu0
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            torch.save({"fwd": [f.fwd for f in flows], "bwd": [f.bwd for f in flows], "cpu_seconds": cpu}, tmp)
        log.info("flows of %d clips computed in %.0f CPU-s, kept in %s", len(clips), cpu, path)
        return flows, cpu
