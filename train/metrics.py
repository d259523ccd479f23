"""Image-quality metrics shared by training validation and client_test.py.

Frames are float RGB in [0, 1], (t, h, w, 3) numpy or (t, 3, h, w) torch. Per sample (a clip): MSE over
all of its frames' pixels and SSIM = mean over frames of scikit-image's SSIM. Aggregated over samples:
``MSE`` = mean of sample MSEs, ``PSNR`` = 10*log10(1/MSE), ``SSIMs`` = sum of sample SSIMs,
``SSIM`` = SSIMs / number of samples.

Identical images have MSE 0 and infinite PSNR. Python floats keep ``inf``; ``json_safe`` writes it as
``PSNR_CAP`` (100 dB, i.e. MSE 1e-10, far beyond any 8-bit result) so result files stay valid JSON.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from skimage.metrics import structural_similarity

PSNR_CAP = 100.0


def _hwc(x: np.ndarray | torch.Tensor) -> np.ndarray:
    """(t, 3, h, w) tensor or (t, h, w, 3) array -> float64 (t, h, w, 3) numpy."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().permute(0, 2, 3, 1).numpy()
    return np.asarray(x, dtype=np.float64)


def mse(pred, target) -> float:
    p, t = _hwc(pred), _hwc(target)
    if p.shape != t.shape:
        raise ValueError(f"shape mismatch: prediction {p.shape} vs target {t.shape}")
    return float(np.mean((p - t) ** 2))


def psnr_from_mse(m: float) -> float:
    """10*log10(1/MSE) for data range 1; ``inf`` for MSE 0."""
    return math.inf if m <= 0 else 10.0 * math.log10(1.0 / m)


def ssim(pred, target) -> float:
    """Mean over frames of skimage SSIM (data_range=1, channel_axis=-1)."""
    p, t = _hwc(pred), _hwc(target)
    if p.shape != t.shape:
        raise ValueError(f"shape mismatch: prediction {p.shape} vs target {t.shape}")
    return float(np.mean([structural_similarity(a, b, data_range=1.0, channel_axis=-1) for a, b in zip(p, t)]))


def rgb_to_y(x: np.ndarray) -> np.ndarray:
    """(..., 3) RGB in [0, 1] -> (..., 1) ITU-R BT.601 luma in [16/255, 235/255], as SR papers report."""
    return ((16.0 + x @ np.array([65.481, 128.553, 24.966])) / 255.0)[..., None]


@dataclass
class SampleScore:
    name: str
    mse: float
    ssim: float
    mse_y: float = float("nan")

    @property
    def psnr(self) -> float:
        return psnr_from_mse(self.mse)


def score_clip(name: str, pred, target, with_y: bool = False) -> SampleScore:
    """Score one clip (all frames)."""
    s = SampleScore(name, mse(pred, target), ssim(pred, target))
    if with_y:
        s.mse_y = float(np.mean((rgb_to_y(_hwc(pred)) - rgb_to_y(_hwc(target))) ** 2))
    return s


@dataclass
class Aggregate:
    """Accumulates sample scores into the platform's {MSE, SSIMs, PSNR, SSIM} block."""

    samples: list[SampleScore] = field(default_factory=list)

    def add(self, s: SampleScore) -> None:
        self.samples.append(s)

    def result(self) -> dict[str, float]:
        if not self.samples:
            raise ValueError("no sample was scored")
        m = float(np.mean([s.mse for s in self.samples]))
        ssims = float(np.sum([s.ssim for s in self.samples]))
        return {"MSE": m, "SSIMs": ssims, "PSNR": psnr_from_mse(m), "SSIM": ssims / len(self.samples)}

    def psnr_y(self) -> float:
        return psnr_from_mse(float(np.mean([s.mse_y for s in self.samples])))


class Exact(dict):
    """A dict whose floats ``json_safe`` leaves unrounded (settings such as a 1e-5 learning rate)."""


def json_safe(obj, ndigits: int | None = 4):
    """Round floats to ``ndigits`` and replace +inf (perfect PSNR) by PSNR_CAP, recursively."""
    if isinstance(obj, Exact):
        return {k: json_safe(v, None) for k, v in obj.items()}
    if isinstance(obj, dict):
        return {k: json_safe(v, ndigits) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v, ndigits) for v in obj]
    if isinstance(obj, (float, np.floating)):
        v = float(obj)
        if math.isinf(v):
            return PSNR_CAP if v > 0 else -PSNR_CAP
        if math.isnan(v):
            return None
        return v if ndigits is None else round(v, ndigits)
    if isinstance(obj, np.integer):
        return int(obj)
    return obj
