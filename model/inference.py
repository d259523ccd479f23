"""Running a model on a clip: frame conversion and ``super_resolve``, the one inference path (training validation,
client_test.py, the handler, bench), at a precision ``model.precision`` resolves.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator

import numpy as np
import torch
import torch.nn as nn

from model.checkpoint import unwrap
from model.precision import reduced_precision, resolve_precision
from model.quantize import is_int8

# Scene-cut detection: mean absolute low-res frame difference (RGB in [0, 1]) above which the
# recurrence restarts from a blank estimate. Consecutive frames of one shot rarely exceed ~0.08 even
# with fast motion; a cut between unrelated shots is typically 0.15-0.4.
DEFAULT_CUT_THRESHOLD = 0.12


def to_tensor(frames: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
    """uint8 (..., h, w, 3) RGB (a frame, a clip) -> float (..., 3, h, w) in [0, 1] on ``device``."""
    t = torch.from_numpy(np.ascontiguousarray(frames)).to(device)
    return t.movedim(-1, -3).float().div_(255.0)


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """float (1, 3, h, w) in [0, 1] -> uint8 (h, w, 3) RGB (rounded, clamped)."""
    return x[0].clamp(0, 1).mul(255).round_().to(torch.uint8).permute(1, 2, 0).cpu().numpy()


def super_resolve(
    model: nn.Module,
    frames: Iterable[np.ndarray],
    device: torch.device | str | None = None,
    cut_threshold: float | None = DEFAULT_CUT_THRESHOLD,
    precision: str = "auto",
    flow_ahead: int = 0,
) -> Iterator[np.ndarray]:
    """Super-resolve a clip frame by frame, streaming: uint8 (h, w, 3) RGB in -> uint8 (4h, 4w, 3) out.

    The one inference path: training validation, client_test.py and the TorchServe handler call it.
    Frames are consumed lazily, so a decoder generator can feed it and an encoder can drain it: a
    frame-recurrent model (FRVSR) never holds the clip in memory. A bidirectional one (BasicVSR) reads the
    whole clip before its first output and holds one feature map per frame (``model.basicvsr``).
    ``precision``: see ``resolve_precision``. ``flow_ahead``: see ``FRVSR.iterate`` (``FLOW_AHEAD`` serves).
    """
    model = unwrap(model)
    device = torch.device(device) if device is not None else next(model.parameters()).device
    precision = resolve_precision(precision, device)
    if precision == "int8" and not is_int8(model):
        raise ValueError("precision int8 needs a model prepared by model.quantize.prepare (a calibrated program)")
    model = reduced_precision(model, precision)  # a copy unless already prepared
    size = None

    def tensors() -> Iterator[torch.Tensor]:
        nonlocal size
        for i, f in enumerate(frames):
            if f.ndim != 3 or f.shape[2] != 3 or f.dtype != np.uint8:
                raise ValueError(f"frame {i}: expected uint8 (h, w, 3) RGB, got {f.dtype} {f.shape}")
            if size is None:
                size = f.shape
            elif f.shape != size:
                raise ValueError(f"frame {i} has size {f.shape[:2]}, the clip started at {size[:2]}")
            yield to_tensor(f, device)[None]  # (1, 3, h, w)

    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            ahead = {"flow_ahead": flow_ahead} if flow_ahead else {}  # an architecture may not have it
            for hr, _ in model.iterate(tensors(), cut_threshold=cut_threshold, **ahead):
                yield to_uint8(hr)
    finally:
        model.train(was_training)


def time_super_resolve(
    model: nn.Module,
    frames: list[np.ndarray],
    device: torch.device | str | None = None,
    precision: str = "auto",
    warmup: int = 1,
) -> float:
    """Seconds ``super_resolve`` takes for the clip ``frames[warmup:]``, after a separate warm-up run on
    ``frames[:warmup]`` (first-call allocations and kernel selection stay out of the number). The warm-up is a
    clip of its own because a bidirectional model (BasicVSR) does most of its work before its first frame
    comes out. The one timing helper: the service's startup estimate, ``make bench`` and the end-to-end
    measurement all use it."""
    if len(frames) <= warmup:
        raise ValueError(f"time_super_resolve needs more than {warmup} frame(s), got {len(frames)}")
    for _ in super_resolve(model, iter(frames[:warmup]), device=device, precision=precision):
        pass
    t0 = time.perf_counter()
    for _ in super_resolve(model, iter(frames[warmup:]), device=device, precision=precision):
        pass
    return time.perf_counter() - t0
