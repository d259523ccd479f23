"""Precision policy: the names a ``--precision`` takes, what ``auto`` resolves to on this hardware, and a model's
weights at a reduced precision. A leaf of ``model/``: ``model.quantize`` (int8) and ``model.inference`` build on it.
"""

from __future__ import annotations

import contextlib
import copy

import torch
import torch.nn as nn

PRECISIONS = ("auto", "fp32", "bf16", "fp16", "int8")  # int8: model.quantize (SRNet int8, the rest bf16)


def native_bf16(device: torch.device | str) -> bool:
    """Whether ``device`` runs bfloat16 convolutions natively (CPU: AVX512-BF16 or AMX; CUDA: Ampere+)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        checks = (
            getattr(torch.cpu, "_is_avx512_bf16_supported", None),
            getattr(torch.cpu, "_is_amx_tile_supported", None),
        )
        return any(bool(c()) for c in checks if c is not None)
    return False


def check_precision(precision: str) -> str:
    """``precision`` if it is one of ``PRECISIONS``, else a ValueError listing them."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {list(PRECISIONS)}, got {precision!r}")
    return precision


def resolve_precision(precision: str, device: torch.device | str) -> str:
    """``auto`` -> ``bf16`` where the hardware runs it natively, else ``fp32``; others are checked and kept.

    Convolutions run in the reduced type; the flow, the warp, the bicubic residual and the output stay
    float32 (see ``FRVSR.step``), so bf16 moves the output by well under one 8-bit level.
    """
    if check_precision(precision) == "auto":
        return "bf16" if native_bf16(device) else "fp32"
    return precision  # int8 runs a model prepared by model.quantize.prepare: its other layers bf16


REDUCED = {"bf16": torch.bfloat16, "fp16": torch.float16, "int8": torch.bfloat16}


def reduced_precision(model: nn.Module, precision: str) -> nn.Module:
    """``model`` ready to run at a resolved ``precision``: itself for fp32; for bf16 or fp16 a copy whose
    parameters are stored in that type (buffers and the module itself untouched).

    Inference runs such a copy rather than fp32 weights under autocast: the result is the same (convolutions
    in the reduced type, the flow, warps, residual and output in float32: see ``FRVSR.step``; 45+ dB apart,
    ``tests/model/test_inference.py``) without autocast's casts of every weight at every call, and it is what the
    int8 path (``model.quantize``) builds on. Speed: within this box's noise of autocast in interleaved rounds
    (``bench/results/runtimes.md``). Training keeps fp32 weights under autocast.
    """
    if precision == "fp32":
        return model
    dtype = REDUCED[precision]  # int8: the layers outside the int8 program
    if all(p.dtype == dtype for p in model.parameters()):
        return model
    copy_ = copy.deepcopy(model)
    for p in copy_.parameters():
        p.data = p.data.to(dtype)  # memory format (channels-last) kept
    return copy_


def autocast(precision: str, device: torch.device | str) -> contextlib.AbstractContextManager:
    """The autocast context for a resolved precision (a no-op for fp32)."""
    device = torch.device(device)
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    return torch.autocast(device.type, dtype=dtype)
