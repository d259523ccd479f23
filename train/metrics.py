"""Image-quality metrics shared by training validation and client_test.py.

Frames are float RGB in [0, 1], (t, h, w, 3) numpy or (t, 3, h, w) torch. Per sample (a clip): MSE over
all of its frames' pixels and SSIM = mean over frames of scikit-image's SSIM. Aggregated over samples:
``MSE`` = mean of sample MSEs, ``PSNR`` = 10*log10(1/MSE), ``SSIMs`` = sum of sample SSIMs,
``SSIM`` = SSIMs / number of samples.

Reported MSE (``Aggregate.result``, the xlsx, trial.txt) is on the 8-bit scale, 0 to 255^2, as MATLAB's
``immse`` and OpenCV give for 8-bit images: four decimals of it keep the precision that four decimals of
a [0, 1] MSE lose. PSNR is the same number either way: 10*log10(255^2 / MSE_8bit) = 10*log10(1 / MSE).

Temporal consistency: ``tof`` (TecoGAN's tOF, Chu et al. 2020), the mean end-point distance in pixels
between the optical flow of the output and the optical flow of the ground truth, over all consecutive
frame pairs (lower is better; 0 when the output moves exactly like the ground truth). Flow is OpenCV's
Farneback flow on 8-bit BT.601 luma with TecoGAN's parameters. A flickering or shimmering output has
flow that the ground truth does not, so it scores worse even when each frame alone looks right.

Identical images have MSE 0 and infinite PSNR. Python floats keep ``inf``; ``json_safe`` writes it as
``PSNR_CAP`` (100 dB, i.e. MSE 1e-10, far beyond any 8-bit result) so result files stay valid JSON.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np
import torch
from skimage.metrics import structural_similarity

PSNR_CAP = 100.0
MSE_SCALE = 255.0**2  # [0, 1] MSE -> 8-bit MSE, the scale results are reported on


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
    per_frame = [structural_similarity(a, b, data_range=1.0, channel_axis=-1) for a, b in zip(p, t, strict=True)]
    return float(np.mean(per_frame))


def rgb_to_y(x: np.ndarray) -> np.ndarray:
    """(..., 3) RGB in [0, 1] -> (..., 1) ITU-R BT.601 luma in [16/255, 235/255], as SR papers report."""
    return ((16.0 + x @ np.array([65.481, 128.553, 24.966])) / 255.0)[..., None]


# cv2.calcOpticalFlowFarneback(pyr_scale, levels, winsize, iterations, poly_n, poly_sigma, flags):
# TecoGAN's tOF settings
FARNEBACK = (0.5, 3, 15, 3, 5, 1.2, 0)


def _gray_u8(frames: np.ndarray) -> np.ndarray:
    """float (t, h, w, 3) RGB in [0, 1] -> uint8 (t, h, w) luma (cv2's RGB2GRAY weights)."""
    u8 = np.clip(np.rint(frames * 255.0), 0, 255).astype(np.uint8)
    return np.stack([cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in u8])


def optical_flows(frames) -> np.ndarray:
    """Farneback flow between consecutive frames: (t, h, w, 3) in [0, 1] -> float32 (t-1, h, w, 2).

    ``flows[i]`` maps frame i to frame i+1 in pixels (x, y): ``frame_i[p] ~ frame_{i+1}[p + flow[p]]``.
    """
    g = _gray_u8(_hwc(frames))
    if len(g) < 2:
        raise ValueError(f"optical flow needs at least 2 frames, got {len(g)}")
    return np.stack([cv2.calcOpticalFlowFarneback(a, b, None, *FARNEBACK) for a, b in zip(g[:-1], g[1:], strict=True)])


def tof(pred, target, target_flows: np.ndarray | None = None) -> float:
    """tOF: mean over frame pairs and pixels of |flow(pred) - flow(target)| (Euclidean, in pixels).

    ``target_flows`` (from ``optical_flows(target)``) may be passed to score several predictions of
    one clip without recomputing the ground truth's flow.
    """
    p = _hwc(pred)
    if p.shape != _hwc(target).shape:
        raise ValueError(f"shape mismatch: prediction {p.shape} vs target {_hwc(target).shape}")
    ft = optical_flows(target) if target_flows is None else target_flows
    fp = optical_flows(p)
    if fp.shape != ft.shape:
        raise ValueError(f"target_flows {ft.shape} do not match the prediction's flows {fp.shape}")
    return float(np.mean(np.linalg.norm(fp - ft, axis=-1)))


@dataclass
class SampleScore:
    name: str
    mse: float
    ssim: float
    mse_y: float = float("nan")
    tof: float = float("nan")  # temporal consistency (see ``tof``); nan when not computed

    @property
    def psnr(self) -> float:
        return psnr_from_mse(self.mse)


def score_clip(name: str, pred, target, with_y: bool = False, target_flows: np.ndarray | None = None) -> SampleScore:
    """Score one clip (all frames); ``target_flows`` (``optical_flows(target)``) also scores tOF."""
    s = SampleScore(name, mse(pred, target), ssim(pred, target))
    if with_y:
        s.mse_y = float(np.mean((rgb_to_y(_hwc(pred)) - rgb_to_y(_hwc(target))) ** 2))
    if target_flows is not None:
        s.tof = tof(pred, target, target_flows)
    return s


@dataclass
class Aggregate:
    """Accumulates sample scores into the platform's {MSE, SSIMs, PSNR, SSIM} block."""

    samples: list[SampleScore] = field(default_factory=list)

    def add(self, s: SampleScore) -> None:
        self.samples.append(s)

    def result(self) -> dict[str, float]:
        """{MSE (8-bit scale), SSIMs, PSNR, SSIM}; PSNR is of the mean [0, 1] MSE."""
        if not self.samples:
            raise ValueError("no sample was scored")
        m = float(np.mean([s.mse for s in self.samples]))
        ssims = float(np.sum([s.ssim for s in self.samples]))
        return {"MSE": m * MSE_SCALE, "SSIMs": ssims, "PSNR": psnr_from_mse(m), "SSIM": ssims / len(self.samples)}

    def psnr_y(self) -> float:
        return psnr_from_mse(float(np.mean([s.mse_y for s in self.samples])))

    def tof(self) -> float:
        """Mean tOF over the samples that have one (nan if none)."""
        v = [s.tof for s in self.samples if not math.isnan(s.tof)]
        return float(np.mean(v)) if v else float("nan")


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
