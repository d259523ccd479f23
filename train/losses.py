"""FRVSR's training losses, shared by the pixel stage (``train.trainer``) and the GAN stage (``train.gan``).

Shapes: b = batch, t = frames, (h, w) low-res, (H, W) = (4h, 4w) high-res; images float in [0, 1].
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from model.frvsr import flow_warp
from train.metrics import psnr_from_mse


def warp_loss(lr: torch.Tensor, flows: torch.Tensor) -> torch.Tensor:
    """FNet's warping L2: each low-res frame warped by its flow should match the next.

    lr (b, t, 3, h, w), flows (b, t, 2, h, w) where ``flows[:, i]`` warps frame i-1 onto frame i.
    """
    prev = lr[:, :-1].reshape(-1, *lr.shape[2:])  # (b*(t-1), 3, h, w)
    warped = flow_warp(prev, flows[:, 1:].reshape(-1, 2, *lr.shape[3:]))
    return F.mse_loss(warped, lr[:, 1:].reshape(-1, *lr.shape[2:]))


def spectrum_loss(out: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
    """L1 between the log amplitude spectra of output and ground truth (``torch.fft.rfft2`` of each frame and
    channel, orthonormal): how much detail there is at each spatial frequency and orientation, not where it is
    (the phase is left out), so it asks for texture of the right energy where the pixel L2 asks for the mean.
    out, hr (..., 3, H, W) in [0, 1]; float32."""
    amplitude = [torch.fft.rfft2(x.float(), norm="ortho").abs().log1p() for x in (out, hr)]
    return F.l1_loss(*amplitude)


def frvsr_loss(
    model: nn.Module,
    lr: torch.Tensor,
    hr: torch.Tensor,
    flow_loss_weight: float,
    flows: torch.Tensor | None = None,
    teacher: torch.Tensor | None = None,
    distill: float = 0.0,
) -> tuple[torch.Tensor, dict]:
    """Pixel L2 on the output + ``flow_loss_weight`` * FNet's warping L2 (+ ``distill`` * the L2 to ``teacher``'s
    output). lr (b, t, 3, h, w), hr and teacher (b, t, 3, H, W); ``flows`` (b, t, 2, h, w): a frozen flow's,
    precomputed (``train.flows``); its warping L2 is then reported but constant (nothing learns from it)."""
    out, flows = model(lr) if flows is None else model(lr, flows)  # (b, t, 3, H, W), (b, t, 2, h, w)
    pixel = F.mse_loss(out, hr)
    flow = warp_loss(lr, flows)
    loss = pixel + flow_loss_weight * flow
    stats = {"pixel": pixel.item(), "flow": flow.item(), "psnr": psnr_from_mse(pixel.item())}
    if teacher is not None:
        to_teacher = F.mse_loss(out, teacher)
        loss = loss + distill * to_teacher
        stats["distill"] = to_teacher.item()
    return loss, stats
