"""Calibrate a checkpoint's models for int8 (``model.quantize``) on real clips and store the programs in it.

    python -m train.calibrate model/pretrained/FRVSR_GAN_default.pth \
        --data ../shared/data/vsr_train ../shared/data/vimeo90k_sample [--out OUT.pth]

Calibration clips: the train split of each dataset (never its test list), ``--clips`` of them spread over the
split, the first ``--frames`` frames of each. The clean model sees them as the platform's clean input (bicubic
x1/4); a compressed-input model sees the same clips H.264-compressed at ``CRFS`` (``train.evaluate``'s maker),
one CRF per clip in turn. The observed SRNet runs inside the real recurrence, so the feature state and the
warped estimate it sees are the ones it will see when serving.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from model.checkpoint import INT8, write_checkpoint
from model.inference import super_resolve, to_tensor
from model.quantize import quantize
from model.variants import CLEAN, load_model_set
from train.data import crop_to_scale, discover_samples, read_clip, split_samples
from train.evaluate import lowres_input

log = logging.getLogger(__name__)
CRFS = (18, 23, 28, 32)  # a compressed-input model's calibration inputs, one per clip in turn


def calibration_clips(datasets: list[Path], clips: int, frames: int) -> list[tuple[str, np.ndarray]]:
    """(name, uint8 (t, H, W, 3) high-res frames) of ``clips`` train-split clips per dataset, evenly spread."""
    out = []
    for root in datasets:
        train, _ = split_samples(root, discover_samples(root), val_split=0.2, seed=0)
        step = max(1, len(train) // clips)
        for s in train[::step][:clips]:
            out.append((s.name, crop_to_scale(read_clip(s)[:frames])))
    return out


def calibrate_model(model: nn.Module, clips: list[tuple[str, np.ndarray]], compressed: bool) -> dict[str, bytes]:
    """The int8 programs of ``model``'s ``INT8`` modules (``model.quantize.quantize``), calibrated inside its
    recurrence on ``clips`` (clean BI low-res input, or H.264 at ``CRFS`` for a compressed-input model)."""

    def run(observed: nn.Module) -> None:
        for i, (name, hr) in enumerate(clips):
            crf = CRFS[i % len(CRFS)] if compressed else None
            lr, _, _ = lowres_input(to_tensor(hr), "bicubic", name, crf)
            for _ in super_resolve(observed, iter(lr), precision="fp32"):
                pass

    return quantize(model, run)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m train.calibrate", description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoint", type=Path)
    p.add_argument("--data", type=Path, nargs="+", required=True, help="datasets whose train split calibrates")
    p.add_argument("--clips", type=int, default=8, help="clips per dataset")
    p.add_argument("--frames", type=int, default=10, help="frames per clip")
    p.add_argument("--out", type=Path, help="where to write (default: the checkpoint itself, atomically)")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(max(1, torch.get_num_threads()))
    models, ckpt = load_model_set(a.checkpoint)
    if not all(hasattr(m, "INT8") for m in models.models.values()):
        print(f"error: {ckpt.get('arch')} names no modules to run in int8 (its INT8)", file=sys.stderr)
        return 2
    clips = calibration_clips(a.data, a.clips, a.frames)
    programs = {}
    for variant, model in models.models.items():
        t0 = time.perf_counter()
        found = calibrate_model(model.float(), clips, compressed=variant != CLEAN)
        programs[variant] = {
            "programs": found,
            "keep_float": {path: list(keep) for path, keep in model.INT8.items()},
            "calibration": f"{len(clips)} train-split clips x {a.frames} frames of {[str(d) for d in a.data]}"
            + ("" if variant == CLEAN else f", H.264 CRF {list(CRFS)}"),
            "torch": str(torch.__version__),
        }
        size = sum(map(len, found.values())) / 1e6
        log.info("%s: %s calibrated in %.0f s, %.1f MB", variant, sorted(found), time.perf_counter() - t0, size)
    out = a.out or a.checkpoint
    write_checkpoint(out, {**ckpt, INT8: programs})
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
