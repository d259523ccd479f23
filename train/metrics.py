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

Perceptual measures (``vmaf``, ``vmaf_neg``, ``brisque``), for judging the adversarial stage beside PSNR:

- VMAF (Netflix's Video Multi-method Assessment Fusion, model v0.6.1, through the PyTorch port ``vmaf-torch``): a
  full-reference score, 0 (bad) to 100 (excellent; identical clips get 97.4-99.6, more with more motion), an SVM
  fused from VIF at 4 scales, ADM (detail loss) and the reference's motion. It is computed on 8-bit BT.601 luma
  (``rgb_to_y``, as PSNR_Y: limited range, 16 to 235, the Y plane an FFmpeg yuv420p encode carries and libvmaf
  reads; tOF's flow uses OpenCV's full-range luma) of the whole clip, per frame, clipped to [0, 100] and
  averaged over the frames, as libvmaf does by default. It counts enhancement (sharpening, contrast) as
  quality: a sharpened copy of the reference can score above the reference itself.
- VMAF NEG ("no enhancement gain"): the same model with VIF's and ADM's enhancement gain limited to 1, so
  sharpening is not rewarded; the number to read for a GAN, which may add detail the ground truth lacks.
- BRISQUE (Mittal et al. 2012, the ``brisque`` package's LIVE-trained SVM): no-reference naturalness of each
  frame from the statistics of its normalised luminance, roughly 0 (natural) to 100 (distorted), lower is
  better; the mean over the clip's frames. Scored on the 8-bit RGB frames, which the library turns into BT.709
  luma in [0, 1] (scikit-image's ``rgb2gray``, as its own ``score`` does); a flat frame has none (skipped).

VMAF was tuned for 1080p viewed at three picture heights; on small frames its absolute values are not those of
published 1080p numbers, but model and bicubic are scored alike, so their difference is fair.

Identical images have MSE 0 and infinite PSNR. Python floats keep ``inf``; ``json_safe`` writes it as
``PSNR_CAP`` (100 dB, i.e. MSE 1e-10, far beyond any 8-bit result) so result files stay valid JSON.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field

import cv2
import numpy as np
import skimage.color
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


# ----------------------------------------------------------------------------- VMAF, VMAF NEG, BRISQUE
# The libraries import slowly (pandas, scipy.optimize, scikit-image's io: ~3 s together); they load on first use.

VMAF_MIN_SIDE = 17  # VIF's 17-tap window at full scale: smaller frames cannot be scored
VMAF_CHUNK_PIXELS = 1 << 22  # frames per pass of the port: ~4 M pixels, ~0.6 GB of its float32 intermediates


@functools.cache
def _vmaf_model(neg: bool):
    from vmaf_torch import VMAF

    # clip_score: each frame's score clipped to the model's [0, 100], libvmaf's default
    return VMAF(temporal_pooling=False, enable_motion=True, clip_score=True, NEG=neg).eval()


def _vmaf_luma(frames) -> torch.Tensor:
    """float RGB in [0, 1] -> float32 (t, 1, h, w) 8-bit BT.601 luma, 16..235 (the scale VMAF reads)."""
    y = np.rint(rgb_to_y(_hwc(frames))[..., 0] * 255.0)  # (t, h, w)
    if min(y.shape[1:]) < VMAF_MIN_SIDE:
        raise ValueError(f"VMAF needs frames of at least {VMAF_MIN_SIDE}x{VMAF_MIN_SIDE} pixels, got {y.shape[1:]}")
    return torch.from_numpy(y.astype(np.float32))[:, None]


def _chunks(n: int, frame_pixels: int) -> list[tuple[int, int]]:
    step = max(1, VMAF_CHUNK_PIXELS // frame_pixels)
    return [(a, min(a + step, n)) for a in range(0, n, step)]


def vmaf_motion(target) -> np.ndarray:
    """VMAF's motion feature (``motion2``) of the reference clip: float32 (t,), one value per frame.

    Frame i's is min(SAD(i, i-1), SAD(i, i+1)) of the blurred luma (0 for the first frame), so it needs the whole
    clip in order. Pass it to ``vmaf`` to score several outputs of one clip without recomputing it.
    """
    ref = _vmaf_luma(target)
    n, model, out = len(ref), _vmaf_model(False), []
    with torch.no_grad():
        for a, b in _chunks(n, ref[0].numel()):
            lo, hi = max(a - 1, 0), min(b + 1, n)  # a neighbour each side: frames a..b-1 see both of theirs
            out.append(model.compute_motion2(ref[lo:hi])[a - lo : b - lo, 0])
    return torch.cat(out).numpy()


def vmaf(pred, target, neg: bool = False, target_motion: np.ndarray | None = None) -> float:
    """VMAF (v0.6.1; ``neg``: VMAF NEG) of ``pred`` against ``target``, whole clips, float RGB in [0, 1].

    Per frame on 8-bit BT.601 luma, clipped to [0, 100], then the mean over frames; ``target_motion``
    (``vmaf_motion(target)``) may be passed to score several predictions of one clip.
    """
    ref, dist = _vmaf_luma(target), _vmaf_luma(pred)
    if ref.shape != dist.shape:
        raise ValueError(f"shape mismatch: prediction {tuple(dist.shape)} vs target {tuple(ref.shape)}")
    motion = vmaf_motion(target) if target_motion is None else target_motion
    if motion.shape != (len(ref),):
        raise ValueError(f"target_motion {motion.shape} does not match the clip's {len(ref)} frames")
    model, scores = _vmaf_model(neg), []
    with torch.no_grad():
        for a, b in _chunks(len(ref), ref[0].numel()):
            r, d = ref[a:b], dist[a:b]
            m = torch.from_numpy(motion[a:b])[:, None]
            scores.append(model.predict(model.compute_adm_score(r, d), m, model.compute_vif_features(r, d)))
    return float(torch.cat(scores).mean())


def vmaf_neg(pred, target, target_motion: np.ndarray | None = None) -> float:
    """VMAF NEG: ``vmaf`` with enhancement gain limited to 1 (sharpening is not counted as quality)."""
    return vmaf(pred, target, neg=True, target_motion=target_motion)


@functools.cache
def _brisque_model():
    from brisque import BRISQUE

    # url=False: the model scores arrays; url=True would fetch an image over HTTP (requests), never wanted here.
    # The model (svm.txt, normalize.pickle) ships inside the package.
    return BRISQUE(url=False)


def _brisque_frame(model, rgb: np.ndarray) -> float:
    """BRISQUE of one uint8 (h, w, 3) RGB frame: ``BRISQUE.score`` step by step, without two of its quirks."""
    gray = skimage.color.rgb2gray(rgb)  # BT.709 luma in [0, 1], as BRISQUE.score makes it
    half = cv2.resize(gray, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_CUBIC)
    # score() also computes a first MSCN map it never uses (a third of its time); skipped. Its features mix
    # floats with 1-element arrays, which numpy 2 no longer turns into floats inside the package: made floats here.
    features = np.concatenate([model.calculate_brisque_features(g, kernel_size=7, sigma=7 / 6) for g in (gray, half)])
    return float(model.calculate_image_quality_score([np.asarray(f, dtype=np.float64).item() for f in features]))


def brisque(frames) -> float:
    """Mean BRISQUE over a clip's frames (float RGB in [0, 1], rounded to 8 bits); lower is more natural.

    Frames without spatial structure (flat) have no BRISQUE and are left out; nan if no frame has one.
    """
    model = _brisque_model()
    u8 = np.clip(np.rint(_hwc(frames) * 255.0), 0, 255).astype(np.uint8)
    with np.errstate(invalid="ignore", divide="ignore"):  # a flat frame's statistics are 0/0: nan, skipped
        per_frame = [_brisque_frame(model, f) for f in u8]
    defined = [v for v in per_frame if math.isfinite(v)]
    return float(np.mean(defined)) if defined else float("nan")


@dataclass
class SampleScore:
    name: str
    mse: float
    ssim: float
    mse_y: float = float("nan")
    tof: float = float("nan")  # temporal consistency (see ``tof``); nan when not computed
    vmaf: float = float("nan")  # the perceptual measures (``vmaf``, ``vmaf_neg``, ``brisque``); nan when not computed
    vmaf_neg: float = float("nan")
    brisque: float = float("nan")

    @property
    def psnr(self) -> float:
        return psnr_from_mse(self.mse)


def score_clip(
    name: str,
    pred,
    target,
    with_y: bool = False,
    target_flows: np.ndarray | None = None,
    target_motion: np.ndarray | None = None,
) -> SampleScore:
    """Score one clip (all frames); ``target_flows`` (``optical_flows(target)``) also scores tOF,
    ``target_motion`` (``vmaf_motion(target)``) VMAF, VMAF NEG and the prediction's BRISQUE."""
    s = SampleScore(name, mse(pred, target), ssim(pred, target))
    if with_y:
        s.mse_y = float(np.mean((rgb_to_y(_hwc(pred)) - rgb_to_y(_hwc(target))) ** 2))
    if target_flows is not None:
        s.tof = tof(pred, target, target_flows)
    if target_motion is not None:
        s.vmaf = vmaf(pred, target, target_motion=target_motion)
        s.vmaf_neg = vmaf_neg(pred, target, target_motion=target_motion)
        s.brisque = brisque(pred)
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

    def _mean(self, measure: str) -> float:
        """Mean of a per-sample measure over the samples that have one (nan if none)."""
        v = [getattr(s, measure) for s in self.samples if not math.isnan(getattr(s, measure))]
        return float(np.mean(v)) if v else float("nan")

    def tof(self) -> float:
        return self._mean("tof")

    def vmaf(self) -> float:
        return self._mean("vmaf")

    def vmaf_neg(self) -> float:
        return self._mean("vmaf_neg")

    def brisque(self) -> float:
        return self._mean("brisque")


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
