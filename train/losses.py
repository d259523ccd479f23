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
