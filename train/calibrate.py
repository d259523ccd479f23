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
import copy
import logging
import sys
import time
from pathlib import Path

import numpy as np
import torch

from common.files import atomic_path
from model.frvsr import FRVSR
from model.inference import super_resolve, to_tensor
from model.quantize import INT8_KEY, KEEP_FLOAT, quantize_srnet
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


def calibrate_model(model: FRVSR, clips: list[tuple[str, np.ndarray]], compressed: bool,
                    keep_float: tuple[str, ...] = KEEP_FLOAT) -> bytes:  # fmt: skip
    """The int8 program of ``model``'s SRNet, calibrated inside its recurrence on ``clips``."""

    def run(observed: torch.nn.Module) -> None:
        net = copy.deepcopy(model)
        net.srnet = observed
        for i, (name, hr) in enumerate(clips):
            crf = CRFS[i % len(CRFS)] if compressed else None
            lr, _, _ = lowres_input(to_tensor(hr), "bicubic", name, crf)
            for _ in super_resolve(net.eval(), iter(lr), precision="fp32"):
                pass

    return quantize_srnet(model.srnet, run, keep_float)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m train.calibrate", description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoint", type=Path)
    p.add_argument("--data", type=Path, nargs="+", required=True, help="datasets whose train split calibrates")
    p.add_argument("--clips", type=int, default=8, help="clips per dataset")
    p.add_argument("--frames", type=int, default=10, help="frames per clip")
    p.add_argument("--keep_float", nargs="*", default=list(KEEP_FLOAT), help="SRNet layers left in bf16")
    p.add_argument("--out", type=Path, help="where to write (default: the checkpoint itself, atomically)")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(max(1, torch.get_num_threads()))
    models, ckpt = load_model_set(a.checkpoint)
    if not all(isinstance(m, FRVSR) for m in models.models.values()):
        print(f"error: int8 calibration is for FRVSR models; {a.checkpoint} holds {ckpt.get('arch')}", file=sys.stderr)
        return 2
    clips = calibration_clips(a.data, a.clips, a.frames)
    programs = {}
    for variant, model in models.models.items():
        t0 = time.perf_counter()
        program = calibrate_model(model.float(), clips, compressed=variant != CLEAN, keep_float=tuple(a.keep_float))
        programs[variant] = {
            "program": program,
            "keep_float": list(a.keep_float),
            "calibration": f"{len(clips)} train-split clips x {a.frames} frames of {[str(d) for d in a.data]}"
            + ("" if variant == CLEAN else f", H.264 CRF {list(CRFS)}"),
            "torch": str(torch.__version__),
        }
        log.info("%s: calibrated in %.0f s, program %.1f MB", variant, time.perf_counter() - t0, len(program) / 1e6)
    ckpt[INT8_KEY] = programs
    out = a.out or a.checkpoint
    with atomic_path(out) as tmp:
        torch.save(ckpt, tmp)
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
