"""The video pipeline's settings, model-config.yaml's ``handler:`` section: the request limits
(``wire.limits.Limits``), the encoder's choices, the threads and queues of the pipeline, the precision.

These dataclasses are the single source of their defaults: ``client_infer.py``'s options and the
generated model-config.yaml take them from here.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace

from model.precision import check_precision
from wire.limits import Limits

# x264's speed presets, fastest first
X264_PRESETS = (
    "ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow", "placebo",
)  # fmt: skip


@dataclass(frozen=True)
class EncoderSettings:
    """How the 4x video is compressed; defaults are visually lossless and fast enough to hide behind the model."""

    x264_crf: int = 18  # H.264 constant quality: 17-18 is the usual "visually lossless"
    # encoder speed (bench/results/encoder.md, 704x576 at CRF 18): ultrafast took 4.9 ms CPU a frame where superfast
    # took 9.7 and veryfast 15.4, its decoded frames 0.09 dB from superfast's (the bound: 0.1), for a 39 % larger
    # file; the CPU it saves goes to the model on a 2-core box (issue 29)
    x264_preset: str = "ultrafast"
    x264_tune: str | None = None  # x264 --tune (e.g. zerolatency, fastdecode); None: none (bench/results/encoder.md)
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
    vp9_cpu_used: int = 8  # libvpx realtime speed 0-8; 8 keeps VP9 about as fast as x264 veryfast (measured then)
    threads: int = 0  # encoder threads; 0 lets the codec decide

    def __post_init__(self) -> None:
        if self.x264_preset not in X264_PRESETS:
            raise ValueError(f"x264_preset must be one of {list(X264_PRESETS)}, got {self.x264_preset!r}")

    def with_crf(self, crf: int) -> EncoderSettings:
        """These settings at a request's ``crf`` (H.264's 0-51 scale): H.264 4:2:0 takes it as it is; the
        full-chroma path keeps its offset below it (default 12 vs 18); VP9 gets it mapped onto its 0-63."""
        offset = self.x264_crf - self.x264_crf_full_chroma
        return replace(
            self, x264_crf=crf, x264_crf_full_chroma=max(0, crf - offset), vp9_crf=min(63, round(crf * 63 / 51))
        )


@dataclass(frozen=True)
class HandlerSettings:
    """Everything under ``handler:`` in model-config.yaml (flat keys; unknown keys are an error)."""

    limits: Limits = Limits()
    encoder: EncoderSettings = EncoderSettings()
    torch_threads: int = 0  # 0: cores / workers
    queue_frames: int = 8  # frames buffered between decode, model and encode threads
    cut_threshold: float | None = None  # None: the model's default scene-cut threshold
    # auto: int8 where the checkpoint holds a calibrated program and the CPU has AMX-INT8/VNNI (model.quantize),
    # else bf16 where the CPU/GPU runs it natively, else fp32; or one of fp32, bf16, fp16, int8
    precision: str = "auto"
    flow_ahead: int = 2  # frames whose flow a thread of its own computes ahead of SRNet (FRVSR.iterate); 0: in line

    def __post_init__(self) -> None:
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
