"""The shipped default's training recipe in one place, and the same recipe on a CUDA GPU in ~9 minutes.

    python -m train.recipe settings                         # the advance_settings of the long CPU run
    python -m train.recipe run --out DIR --device cuda      # train it on a GPU (~9 min wall) into DIR
    python -m train.recipe run --out DIR --minutes 0.2      # the same on the CPU with a tiny budget (tests)
    python -m train.recipe targets --annotation_data "$SETTINGS"   # a distill run's teacher targets, ahead of it

``run`` goes through the trainer exactly as ``client_train.py`` does (``train.trainer.train``), writes its run
folder under ``runs/models/`` and copies the kept checkpoint into ``DIR``; its path is the last line printed.
On a GPU it changes only what a GPU needs to use its time: more DataLoader workers for the degradation,
a larger batch (with the learning rate scaled by its square root) and the time budget.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import shutil
import sys
from pathlib import Path

import torch

from common.files import atomic_path
from common.paths import VIMEO_SAMPLE, VSR_TRAIN
from train.config import TrainConfig, parse_annotation_data
from train.data import read_train_clips
from train.teacher_targets import run_targets
from train.trainer import load_splits, train

DATASET = VSR_TRAIN
# the long run's settings (model/pretrained/MODEL_CARD.md): clean bicubic input; FRVSR 48-8 with a 32-channel
# feature state and BasicVSR's pretrained SPyNet as its flow at 0.625 of the low-res size, frozen
DEFAULT = {
    "extra_datasets": [str(VIMEO_SAMPLE)],
    "degradation": "bicubic",
    "arch": "frvsr-spynet",
    "flow_scale": 0.625,
    "flow_lr_scale": 0.0,
    "channels": 48,
    "blocks": 8,
    "hidden": 32,
    "num_frames": 10,
    "crop_size": 192,  # 48 px low-res: SPyNet (at least 64 px inside) sees some context
    "batch_size": 4,
    "crops_per_clip": 16,
    "lr": 3e-4,
    "lr_min": 1e-5,
    "flow_loss_weight": 0.5,
    "seed": 2,
    "threads": 1,
    "workers": 1,
    "val_every": 3,
    "max_minutes": 420.0,
}
GPU_MINUTES = 7.5  # of training; start-up and the last validation make the ~9 minutes of wall time
GPU_BATCH = 24
GPU_WORKERS = 8  # the realistic degradation (libx264) and the crops run in these; an H200 box has 16 cores


def gpu_settings(minutes: float = GPU_MINUTES, batch_size: int = GPU_BATCH, workers: int = GPU_WORKERS) -> dict:
    """``DEFAULT`` on a GPU: the time budget, a larger batch (lr scaled by sqrt of the batch ratio), workers."""
    scale = math.sqrt(batch_size / DEFAULT["batch_size"])
    return {
        **DEFAULT,
        "max_minutes": minutes,
        "batch_size": batch_size,
        "lr": DEFAULT["lr"] * scale,
        "workers": workers,
        "threads": 0,
        "val_every": 1000,  # validate once, at the end: the budget is short
    }


def run(out: Path, device: str, settings: dict, dataset: Path = DATASET, trial_name: str = "recipe") -> Path:
    """Train ``settings`` on ``dataset`` and copy the kept checkpoint to ``out``; returns its path."""
    trial = train(str(dataset), TrainConfig.from_settings(settings), trial_name, device, given=set(settings))
    kept = Path(trial["model_path"]) / f"{trial['gened_model_name']}.pth"
    dest = out / kept.name
    with atomic_path(dest) as tmp:
        shutil.copyfile(kept, tmp)
    return dest


def targets(dataset_path: Path, annotation_data: str, threads: int) -> int:
    """The teacher targets of a run's training clips, computed (or found) ahead of the run, e.g. while another run
    trains; the run then finds them in ``runs/teacher_targets/`` and carries their CPU time from there."""
    torch.set_num_threads(threads)
    cfg = TrainConfig.from_settings(parse_annotation_data(annotation_data))
    samples, _ = load_splits(str(dataset_path), cfg)
    _, cpu, _ = run_targets(cfg, samples, read_train_clips(samples, cfg.crop_size))
    print(f"teacher targets of {len(samples)} training clips: {cpu / 60:.1f} CPU-minutes")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("settings", help="print the long run's advance_settings as JSON")
    r = sub.add_parser("run", help="train the recipe into --out")
    r.add_argument("--out", type=Path, required=True)
    r.add_argument("--device", default="cuda")
    r.add_argument("--minutes", type=float, default=GPU_MINUTES)
    r.add_argument("--batch_size", type=int, default=GPU_BATCH)
    r.add_argument("--workers", type=int, default=GPU_WORKERS)
    r.add_argument("--dataset_path", type=Path, default=DATASET)
    r.add_argument("--init_from", default="", help="start from this checkpoint (default: from scratch)")
    t = sub.add_parser("targets", help="a distillation run's teacher targets, ahead of it")
    t.add_argument("--dataset_path", type=Path, default=DATASET)
    t.add_argument("--annotation_data", default="{}", help="the run's annotation_data: its data and teacher settings")
    t.add_argument("--threads", type=int, default=1)
    a = p.parse_args(argv)
    if a.cmd == "settings":
        print(json.dumps(DEFAULT))
        return 0
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if a.cmd == "targets":
        return targets(a.dataset_path, a.annotation_data, a.threads)
    settings = {**gpu_settings(a.minutes, a.batch_size, a.workers), "init_from": a.init_from}
    if a.dataset_path != DATASET:
        settings["extra_datasets"] = []
    try:
        print(run(a.out, a.device, settings, a.dataset_path))
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
