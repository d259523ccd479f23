"""Evaluate a model (and plain bicubic) on whole clips: the code behind validation and client_test.py."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from model.frvsr import FRVSR
from model.inference import super_resolve
from train.data import Sample, bicubic_upscale, crop_to_scale, degrade, read_clip, to_float
from train.degradations import clip_rng, h264_roundtrip
from train.metrics import SampleScore, optical_flows, score_clip

log = logging.getLogger(__name__)


@dataclass
class ClipResult:
    name: str
    frames: int
    size: tuple[int, int]  # high-res (width, height)
    model: SampleScore
    bicubic: SampleScore | None
    seconds: float  # model inference time for the clip


def lowres_frames(hr: torch.Tensor, degradation: str, name: str = "", crf: int | None = None) -> np.ndarray:
    """(t, 3, H, W) float high-res -> uint8 (t, H/4, W/4, 3) low-res frames, as a decoder would give.

    Deterministic: ``realistic`` draws the clip's recipe from its ``name``. ``crf``: then H.264-encode
    and decode the low-res clip at this CRF (libx264 yuv420p, one thread), as a user's upload would be.
    """
    lr = degrade(hr, degradation, rng=clip_rng(name))
    frames = lr.mul(255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    return h264_roundtrip(frames, crf) if crf is not None else frames


def evaluate_clips(
    model: FRVSR,
    samples: Sequence[Sample],
    degradation: str = "bicubic",
    device: str | torch.device = "cpu",
    with_bicubic: bool = False,
    with_y: bool = False,
    with_temporal: bool = False,
    precision: str = "auto",
    crf: int | None = None,
) -> Iterator[ClipResult]:
    """Super-resolve every frame of every sample recurrently (``super_resolve``) and score it.

    The model and bicubic see the same low-res frames (``lowres_frames``: ``degradation``, then H.264
    at ``crf`` when given).
    ``with_temporal`` adds tOF (``train.metrics.tof``) to the model's and bicubic's scores; clips of a
    single frame have none (nan).
    """
    for s in samples:
        clip = crop_to_scale(read_clip(s))
        hr = to_float(clip)  # (t, 3, H, W)
        lr = lowres_frames(hr, degradation, s.name, crf)
        t0 = time.perf_counter()
        out = np.stack(list(super_resolve(model, lr, device=device, precision=precision)))  # (t, H, W, 3) uint8
        seconds = time.perf_counter() - t0
        gt = clip.astype(np.float64) / 255.0
        gt_flows = optical_flows(gt) if with_temporal and len(clip) > 1 else None  # shared by model and bicubic
        model_score = score_clip(s.name, out.astype(np.float64) / 255.0, gt, with_y, gt_flows)
        bic = None
        if with_bicubic:
            up = bicubic_upscale(torch.from_numpy(lr).permute(0, 3, 1, 2).float() / 255.0)
            up = up.mul(255).round().div(255)  # 8-bit output like the model's
            bic = score_clip(s.name, up, gt, with_y, gt_flows)
        log.info(
            "%s: PSNR %.3f dB SSIM %.4f tOF %.3f (%.2fs)",
            s.name,
            model_score.psnr,
            model_score.ssim,
            model_score.tof,
            seconds,
        )
        yield ClipResult(s.name, len(clip), (clip.shape[2], clip.shape[1]), model_score, bic, seconds)
