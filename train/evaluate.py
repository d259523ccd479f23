"""Evaluate a model (and plain bicubic) on whole clips: the code behind validation and client_test.py."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from model.inference import super_resolve, to_tensor
from model.variants import CLEAN, InputRule, ModelSet
from train.data import (
    DataError,
    Sample,
    bicubic_upscale,
    crop_to_scale,
    degrade,
    discover_samples,
    read_clip,
    read_list,
)
from train.degradations import clip_rng, h264_decode, h264_encode
from train.metrics import SampleScore, brisque, optical_flows, score_clip, vmaf_motion
from video.io import VideoReader

log = logging.getLogger(__name__)


@dataclass
class ClipResult:
    name: str
    frames: int
    size: tuple[int, int]  # high-res (width, height)
    model: SampleScore
    bicubic: SampleScore | None
    seconds: float  # model inference time for the clip
    input_quality: str = "clean"  # the model variant that served it (``model.variants``)
    bits_per_pixel: float | None = None  # of the H.264 low-res input; None for frames handed over as they are
    gt_brisque: float = float("nan")  # the ground truth's BRISQUE (``train.metrics.brisque``); nan when not computed


def lowres_frames(hr: torch.Tensor, degradation: str, name: str = "", crf: int | None = None) -> np.ndarray:
    """(t, 3, H, W) float high-res -> uint8 (t, H/4, W/4, 3) low-res frames, as a decoder would give.

    Deterministic: ``realistic`` draws the clip's recipe from its ``name``. ``crf``: then H.264-encode
    and decode the low-res clip at this CRF (libx264 yuv420p, one thread), as a user's upload would be.
    """
    return lowres_input(hr, degradation, name, crf)[0]


def lowres_input(
    hr: torch.Tensor, degradation: str, name: str = "", crf: int | None = None
) -> tuple[np.ndarray, str | None, float | None]:
    """``lowres_frames`` and what a server would read of the upload: (frames, codec, bits per pixel);
    codec and bits per pixel are None for frames handed over as they are (the platform's clean input)."""
    lr = degrade(hr, degradation, rng=clip_rng(name))
    frames = lr.mul(255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    if crf is None:
        return frames, None, None
    data = h264_encode(frames, crf)
    reader = VideoReader(data)
    try:
        info = reader.info
    finally:
        reader.close()
    return h264_decode(data, frames.shape), info.codec, info.bits_per_pixel


def as_model_set(model: nn.Module | ModelSet) -> ModelSet:
    """A plain model as the one model of a ``ModelSet`` (it answers every input)."""
    return model if isinstance(model, ModelSet) else ModelSet({CLEAN: model}, InputRule())


def evaluate_clips(
    model: nn.Module | ModelSet,
    samples: Sequence[Sample],
    degradation: str = "bicubic",
    device: str | torch.device = "cpu",
    with_bicubic: bool = False,
    with_y: bool = False,
    with_temporal: bool = False,
    precision: str = "auto",
    crf: int | None = None,
    input_quality: str | None = None,
    with_perceptual: bool = False,
    gt_brisque: dict[str, float] | None = None,
    post: Callable[[np.ndarray], np.ndarray] | None = None,
) -> Iterator[ClipResult]:
    """Super-resolve every frame of every sample recurrently (``super_resolve``) and score it.

    The model and bicubic see the same low-res frames (``lowres_frames``: ``degradation``, then H.264
    at ``crf`` when given). A ``ModelSet`` serves each clip with the variant the server would choose
    for the upload (its codec and bits per pixel), or with ``input_quality`` when given.
    ``with_temporal`` adds tOF (``train.metrics.tof``) to the model's and bicubic's scores; clips of a
    single frame have none (nan). ``with_perceptual`` adds VMAF, VMAF NEG and BRISQUE (``train.metrics``) to
    them and the ground truth's BRISQUE to the result; ``gt_brisque`` ({clip name: BRISQUE}) is read and filled
    in, so conditions that share the ground truth (``evaluate_conditions``) score it once. ``post`` filters the
    model's uint8 (t, H, W, 3) output before it is scored (a baseline such as an unsharp mask; not timed).
    """
    models = as_model_set(model)
    for s in samples:
        clip = crop_to_scale(read_clip(s))
        hr = to_tensor(clip)  # (t, 3, H, W)
        lr, codec, bpp = lowres_input(hr, degradation, s.name, crf)
        quality, net = models.pick(codec, bpp, input_quality)
        t0 = time.perf_counter()
        out = np.stack(list(super_resolve(net, lr, device=device, precision=precision)))  # (t, H, W, 3) uint8
        seconds = time.perf_counter() - t0
        if post is not None:
            out = post(out)
        gt = clip.astype(np.float64) / 255.0
        gt_flows = optical_flows(gt) if with_temporal and len(clip) > 1 else None  # shared by model and bicubic
        gt_motion = vmaf_motion(gt) if with_perceptual else None  # VMAF's motion feature, shared too
        model_score = score_clip(s.name, out.astype(np.float64) / 255.0, gt, with_y, gt_flows, gt_motion)
        bic = None
        if with_bicubic:
            up = bicubic_upscale(to_tensor(lr))
            up = up.mul(255).round().div(255)  # 8-bit output like the model's
            bic = score_clip(s.name, up, gt, with_y, gt_flows, gt_motion)
        gt_natural = float("nan")
        if with_perceptual:
            known = {} if gt_brisque is None else gt_brisque
            if s.name not in known:
                known[s.name] = brisque(gt)
            gt_natural = known[s.name]
        log.info(
            "%s: PSNR %.3f dB SSIM %.4f tOF %.3f VMAF %.2f (%.2fs, %s model)",
            s.name,
            model_score.psnr,
            model_score.ssim,
            model_score.tof,
            model_score.vmaf,
            seconds,
            quality if models.paired else "its one",  # a single model answers every input
        )
        yield ClipResult(
            s.name, len(clip), (clip.shape[2], clip.shape[1]), model_score, bic, seconds, quality, bpp, gt_natural
        )  # fmt: skip


# ----------------------------------------------------------------------------- client_test.py's policy


def test_samples(dataset_path: str | Path) -> list[Sample]:
    """The clips to score in ``dataset_path``: those named in its ``sep_testlist.txt``, else every clip."""
    samples = discover_samples(dataset_path, min_frames=2)
    test_list = read_list(Path(dataset_path), "sep_testlist.txt")
    if test_list is None:
        return samples
    chosen = [s for s in samples if s.name in set(test_list)]
    if not chosen:
        raise DataError(f"none of the clips in {dataset_path}/sep_testlist.txt were found under {dataset_path}")
    return chosen


def clean_degradation(ckpt: dict) -> str:
    """The platform's clean input for a checkpoint: BI, or BD for a model trained on BD (a ``realistic``
    model is scored on BI like any other)."""
    return "blur" if ckpt.get("train_settings", {}).get("degradation") == "blur" else "bicubic"


def check_crfs(crfs: Iterable[int]) -> list[int]:
    """The compressed-input conditions, each once, in order; ValueError outside x264's 0..51."""
    crfs = list(dict.fromkeys(crfs))
    if any(not 0 <= c <= 51 for c in crfs):
        raise ValueError(f"--crf values must be in 0..51 (x264's range), got {crfs}")
    return crfs


def evaluate_conditions(
    model: nn.Module | ModelSet,
    samples: Sequence[Sample],
    degradation: str,
    device: str | torch.device,
    crfs: Sequence[int],
    progress: Callable[[Iterator[ClipResult], str], Iterable[ClipResult]] = lambda it, label: it,
    precision: str = "auto",
    with_perceptual: bool = False,
    post: Callable[[np.ndarray], np.ndarray] | None = None,
) -> dict[int | None, list[ClipResult]]:
    """Model and bicubic on the clean input (key None) and on each H.264 CRF, with PSNR_Y and tOF, and with
    ``with_perceptual`` VMAF, VMAF NEG and BRISQUE (the ground truth's scored once for all conditions).
    ``progress(results, label)`` may wrap each condition's results (the CLI's progress bar); ``post`` as in
    ``evaluate_clips``."""
    runs, gt_brisque = {}, {}
    for crf in [None, *crfs]:
        label = "clean input" if crf is None else f"H.264 CRF {crf} input"
        results = evaluate_clips(
            model, samples, degradation, device, with_bicubic=True, with_y=True, with_temporal=True, crf=crf,
            precision=precision, with_perceptual=with_perceptual, gt_brisque=gt_brisque, post=post,
        )  # fmt: skip
        runs[crf] = list(progress(results, label))
    return runs
