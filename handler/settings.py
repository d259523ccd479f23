"""Handler settings from model-config.yaml's ``handler:`` section: request limits and encoder choices.

Limits default to the platform's spec (frame area 200x200, 5 s, 300 frames). They are checked twice:
from the container header before any decoding (cheap rejection), and while decoding (headers can be
missing or lie), so a clip over a limit never costs more than the frames up to the limit.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, fields
from fractions import Fraction

from serving.contract import max_video_bytes

from .errors import LimitExceeded

RAISE_HINT = "the server operator can raise it with client_infer.py --{flag} (model-config.yaml handler.{key})"


@dataclass(frozen=True)
class Limits:
    """What one request may contain; a video over any of them is rejected with 422."""

    max_pixels: int = 40_000  # frame area width*height: 200x200; the 4x output is 16x that
    max_seconds: float = 5.0  # clip duration from the video timestamps
    max_frames: int = 300  # frames decoded (5 s at 60 fps)
    max_output_bytes: int = (
        192 * 1024 * 1024
    )  # encoded 4x video; must stay under TorchServe's max_response_size after base64

    def __post_init__(self) -> None:
        if self.max_pixels < 1 or self.max_seconds <= 0 or self.max_frames < 1 or self.max_output_bytes < 1:
            raise ValueError(f"limits must be positive, got {self}")

    def max_input_bytes(self) -> int:
        """The largest accepted video file: uncompressed 8-bit RGB at the limits (compressed ones are smaller)."""
        return max_video_bytes(self.max_pixels, self.max_frames)

    def check_header(
        self, width: int, height: int, seconds: float | None, frames: int | None, fps: Fraction | None
    ) -> None:
        """Reject from container metadata before decoding; unknown values (None) are checked while decoding."""
        self.check_area(width, height)
        if seconds is not None:
            self.check_seconds(seconds, fps)
        if frames:
            self.check_frames(frames)

    def check_area(self, width: int, height: int) -> None:
        if width * height > self.max_pixels:
            raise LimitExceeded(
                f"frame size {width}x{height} = {width * height} pixels is over the limit of {self.max_pixels} pixels "
                f"(max_pixels, e.g. 200x200); downscale the video, "
                f"or {RAISE_HINT.format(flag='max_pixels', key='max_pixels')}"
            )

    def check_seconds(self, seconds: float, fps: Fraction | None = None) -> None:
        slack = 0.5 / float(fps) if fps else 0.02  # timestamps are rounded to the container's clock
        if seconds > self.max_seconds + slack:
            raise LimitExceeded(
                f"duration {seconds:.3f} s is over the limit of {self.max_seconds:g} s (max_seconds); "
                f"cut the video, or {RAISE_HINT.format(flag='max_seconds', key='max_seconds')}"
            )

    def check_frames(self, frames: int) -> None:
        if frames > self.max_frames:
            raise LimitExceeded(
                f"{frames} frames is over the limit of {self.max_frames} frames (max_frames); "
                f"cut the video, or {RAISE_HINT.format(flag='max_frames', key='max_frames')}"
            )

    def check_output(self, n_bytes: int) -> None:
        if n_bytes > self.max_output_bytes:
            raise LimitExceeded(
                f"the 4x video is {n_bytes / 2**20:.1f} MiB, over the limit of {self.max_output_bytes / 2**20:.0f} MiB "
                f"(max_output_bytes, bounded by TorchServe's max_response_size); very noisy content compresses badly: "
                f"send a shorter clip, or {RAISE_HINT.format(flag='max_output_mb', key='max_output_bytes')}"
            )


@dataclass(frozen=True)
class EncoderSettings:
    """How the 4x video is compressed; defaults are visually lossless and fast enough to hide behind the model."""

    x264_crf: int = 18  # H.264 constant quality: 17-18 is the usual "visually lossless"
    x264_preset: str = "veryfast"  # encoder speed; slower presets shrink files ~10% at 2x the CPU
    # fidelity mode: libx264rgb, no YUV 4:2:0 conversion (-0.1 dB vs in-process at CRF 12, instead of -1.8 dB);
    # ~4x larger, plays in FFmpeg/VLC, not in browsers
    x264_rgb: bool = False
    # a source with full-resolution colour (RGB, 4:4:4) is encoded 4:4:4 (RGB H.264 for RGB sources), not 4:2:0:
    # plays in FFmpeg/VLC, not in browsers; 4:2:0 sources (nearly all) stay 4:2:0
    keep_full_chroma: bool = True
    # H.264 quality for those RGB/4:4:4 sources (lossless, screen or studio footage): route PSNR within 0.1 dB
    # of in-process where CRF 18 loses 0.6 dB on smooth clips
    x264_crf_full_chroma: int = 12
    vp9_crf: int = 20  # VP9 (WebM) constant quality on its 0-63 scale
    vp9_cpu_used: int = 8  # libvpx realtime speed 0-8; 8 keeps VP9 about as fast as x264 veryfast
    threads: int = 0  # encoder threads; 0 lets the codec decide


@dataclass(frozen=True)
class HandlerSettings:
    """Everything under ``handler:`` in model-config.yaml (flat keys; unknown keys are an error)."""

    limits: Limits = Limits()
    encoder: EncoderSettings = EncoderSettings()
    torch_threads: int = 0  # 0: cores / workers
    queue_frames: int = 8  # frames buffered between decode, model and encode threads
    cut_threshold: float | None = None  # None: the model's default scene-cut threshold
    precision: str = "auto"  # convolution precision: auto (bf16 where the CPU/GPU runs it natively), fp32, bf16, fp16

    def __post_init__(self) -> None:
        from model.inference import check_precision

        check_precision(self.precision)

    @classmethod
    def from_dict(cls, d: dict | None) -> HandlerSettings:
        d = dict(d or {})
        groups = {"limits": Limits, "encoder": EncoderSettings}
        top = {f.name for f in fields(cls)} - set(groups)
        valid = sorted(top | {f.name for g in groups.values() for f in fields(g)})
        unknown = sorted(k for k in d if k not in valid)
        if unknown:
            raise ValueError(f"unknown handler settings {unknown} in model-config.yaml; valid: {valid}")
        parts = {name: g(**{f.name: d.pop(f.name) for f in fields(g) if f.name in d}) for name, g in groups.items()}
        return cls(**parts, **d)

    def to_dict(self) -> dict:
        """Flat dict, the inverse of from_dict (what client_infer.py writes into model-config.yaml)."""
        d = asdict(self)
        flat = {**d.pop("limits"), **d.pop("encoder"), **d}
        return flat


# ----------------------------------------------------------------------------- where a worker runs


def available_cores() -> int:
    """CPU cores this process may use (its affinity mask where the OS has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def threads_per_worker(torch_threads: int, workers: int) -> int:
    """Intra-op torch threads of one worker: ``torch_threads`` when set (> 0), else the cores / workers."""
    if torch_threads > 0:
        return torch_threads
    return max(1, available_cores() // max(1, workers))


def resolve_device(device: str):
    """``cpu``, ``cuda`` or ``cuda:N`` -> ``torch.device``; ValueError saying what to use instead."""
    import torch

    if device != "cpu" and not device.startswith("cuda"):
        raise ValueError(f"--device must be cpu, cuda or cuda:N, got {device!r}")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(
            f"--device {device} requested, but PyTorch sees no CUDA GPU (torch.cuda.is_available() is False); "
            "use --device cpu"
        )
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ValueError(f"--device must be cpu, cuda or cuda:N, got {device!r}") from None
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ValueError(
            f"--device {device}: there are only {torch.cuda.device_count()} CUDA GPU(s) "
            f"(cuda:0..cuda:{torch.cuda.device_count() - 1})"
        )
    return dev
