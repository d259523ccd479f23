"""Calibrate a checkpoint's models for int8 (``model.quantize``) on real clips and store the programs in it.

    python -m train.calibrate model/pretrained/FRVSR_GAN_default.pth \
        --data ../shared/data/vsr_train ../shared/data/vimeo90k_sample [--out OUT.pth]

Calibration clips: the train split of each dataset (never its test list), ``--clips`` of them spread over the
split, the first ``--frames`` frames of each. The clean model sees them as the platform's clean input (bicubic
x1/4); a compressed-input model sees the same clips H.264-compressed at ``CRFS`` (``train.evaluate``'s maker),
one CRF per clip in turn. The observed SRNet runs inside the real recurrence, so the feature state and the
warped estimate it sees are the ones it will see when serving. A module whose weights are the same in every
variant (the frozen SPyNet of a paired checkpoint) is calibrated once, on the clips in both forms, and its one
program goes into every variant: stored once, compiled once by a server (``model.quantize.int8_model``).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Iterable, Sequence
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


def calibrate_model(
    model: nn.Module,
    clips: list[tuple[str, np.ndarray]],
    compressed: Sequence[bool],
    paths: Iterable[str] | None = None,
) -> dict[str, bytes]:
    """The int8 programs of ``model``'s ``INT8`` modules, or those of ``paths`` (``model.quantize.quantize``),
    calibrated inside its recurrence on ``clips`` in each form of ``compressed``: clean BI low-res input (False)
    and H.264 at ``CRFS`` (True)."""

    def run(observed: nn.Module) -> None:
        for form in compressed:
            for i, (name, hr) in enumerate(clips):
                crf = CRFS[i % len(CRFS)] if form else None
                lr, _, _ = lowres_input(to_tensor(hr), "bicubic", name, crf)
                for _ in super_resolve(observed, iter(lr), precision="fp32"):
                    pass

    return quantize(model, run, paths)


def shared_modules(models: dict[str, nn.Module]) -> list[str]:
    """The ``INT8`` modules whose weights are equal in every one of two or more models (a frozen flow). Each is
    calibrated once, inside the first model's recurrence: right for a module whose inputs no other module's
    weights shape (SPyNet's levels see the low-res frames and the coarser levels' flow only)."""
    first, *rest = models.values()
    if not rest:
        return []

    def same(path: str, other: nn.Module) -> bool:
        ref, got = first.get_submodule(path).state_dict(), other.get_submodule(path).state_dict()
        return ref.keys() == got.keys() and all(torch.equal(ref[k], got[k]) for k in ref)

    return [path for path in first.INT8 if all(path in m.INT8 and same(path, m) for m in rest)]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m train.calibrate", description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoint", type=Path)
    p.add_argument("--data", type=Path, nargs="+", required=True, help="datasets whose train split calibrates")
    p.add_argument("--clips", type=int, default=8, help="clips per dataset")
    p.add_argument("--frames", type=int, default=10, help="frames per clip")
    p.add_argument("--out", type=Path, help="where to write (default: the checkpoint itself, atomically)")
    p.add_argument("--int8_flow", action="store_true", help="the flow int8 too, where the arch names it (INT8_FLOW)")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(max(1, torch.get_num_threads()))
    models, ckpt = load_model_set(a.checkpoint)
    if not all(hasattr(m, "INT8") for m in models.models.values()):
        print(f"error: {ckpt.get('arch')} names no modules to run in int8 (its INT8)", file=sys.stderr)
        return 2
    if a.int8_flow:
        if not all(hasattr(m, "INT8_FLOW") for m in models.models.values()):
            print(f"error: {ckpt.get('arch')} has no int8 flow (INT8_FLOW); leave out --int8_flow", file=sys.stderr)
            return 2
        for m in models.models.values():
            m.INT8 = {**m.INT8, **m.INT8_FLOW}
    clips = calibration_clips(a.data, a.clips, a.frames)
    described = f"{len(clips)} train-split clips x {a.frames} frames of {[str(d) for d in a.data]}"
    shared, found_shared = shared_modules(models.models), {}
    if shared:  # one program each for every variant, calibrated on every variant's kind of input
        t0 = time.perf_counter()
        forms = sorted({variant != CLEAN for variant in models.models})
        found_shared = calibrate_model(next(iter(models.models.values())).float(), clips, forms, shared)
        size = sum(map(len, found_shared.values())) / 1e6
        log.info("every variant: %s calibrated in %.0f s, %.1f MB", shared, time.perf_counter() - t0, size)
    note = f"; {shared}: one program each for every variant, on the clips clean and H.264" if shared else ""
    programs = {}
    for variant, model in models.models.items():
        t0 = time.perf_counter()
        own = [path for path in model.INT8 if path not in shared]
        found = calibrate_model(model.float(), clips, [variant != CLEAN], own) if own else {}
        programs[variant] = {
            "programs": {**found, **found_shared},  # the shared programs: the same bytes, pickled once
            "keep_float": {path: list(keep) for path, keep in model.INT8.items()},
            "calibration": described + ("" if variant == CLEAN else f", H.264 CRF {list(CRFS)}") + note,
            "torch": str(torch.__version__),
        }
        size = sum(map(len, found.values())) / 1e6
        if found:
            log.info("%s: %s calibrated in %.0f s, %.1f MB", variant, sorted(found), time.perf_counter() - t0, size)
    out = a.out or a.checkpoint
    write_checkpoint(out, {**ckpt, INT8: programs})
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
