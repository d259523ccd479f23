"""How a low-res clip is made from a high-res one: the one ``degrade`` that training and evaluation share.

Kinds (``DEGRADATIONS``):
- ``bicubic`` ("BI"): antialiased bicubic x1/4, quantised to 8 bits.
- ``blur`` ("BD"): Gaussian blur sigma 1.5, then every 4th pixel, quantised.
- ``realistic``: the way real small videos are made. One random ``Recipe`` per clip (every frame of the
  clip gets the same one): an optional Gaussian blur (sometimes anisotropic), a random downscaling
  kernel, sometimes light noise, then most of the time a real H.264 encode and decode of the low-res
  clip (libx264, yuv420p, CRF 18-32), sometimes JPEG instead, sometimes nothing. Training draws the
  recipe from the DataLoader worker's ``random``; evaluation draws it from a generator seeded by the
  clip's name, so a clip always gets the same recipe.

All functions take high-res float clips (t, 3, H, W) in [0, 1] with H, W multiples of 4 and return
low-res float clips (t, 3, H/4, W/4) holding exact 8-bit values, like a decoded video.
"""

from __future__ import annotations

import math
import random
import zlib
from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from model.frvsr import SCALE
from video.io import decode_frames, encode_frames

DEGRADATIONS = ("bicubic", "blur", "realistic")
BLUR_SIGMA = 1.5  # the BD degradation's blur
EVAL_CRF = 23  # client_test.py's compressed-input sheet: bicubic x1/4, then H.264 at this CRF
H264_PRESET = "veryfast"  # what a phone or a web encoder typically uses; cheap on tiny training crops


@dataclass(frozen=True)
class Recipe:
    """One clip's degradation; every frame of the clip gets the same."""

    blur: tuple[float, float, float] | None = None  # Gaussian (sigma_x, sigma_y, angle in radians) in high-res pixels
    kernel: str = "bicubic"  # downscaling: 'bicubic', 'area', 'bilinear' (antialiased), or 'nearest' (every 4th pixel)
    noise: float = 0.0  # std of Gaussian noise added to the low-res frames, in 8-bit levels
    codec: str | None = None  # 'h264' (libx264 yuv420p), 'jpeg', or None
    quality: int = 0  # the CRF for h264, the quality for jpeg


BICUBIC = Recipe()
BLUR = Recipe(blur=(BLUR_SIGMA, BLUR_SIGMA, 0.0), kernel="nearest")


def sample_recipe(rng: random.Random) -> Recipe:
    """A random ``realistic`` recipe. Proportions: no blur 40 %, isotropic 40 %, anisotropic 20 % (sigma
    0.2-2.0); bicubic 50 %, area 25 %, bilinear 25 %; noise (1-4 levels) 20 %; H.264 CRF 18-32 60 %,
    JPEG quality 40-90 15 %, no compression 25 % (clean input must stay a strength, not only an edge case)."""
    r = rng.random()
    if r < 0.4:
        blur = None
    elif r < 0.8:
        s = rng.uniform(0.2, 2.0)
        blur = (s, s, 0.0)
    else:
        blur = (rng.uniform(0.2, 2.0), rng.uniform(0.2, 2.0), rng.uniform(0.0, math.pi))
    kernel = rng.choice(("bicubic", "bicubic", "area", "bilinear"))
    noise = rng.uniform(1.0, 4.0) if rng.random() < 0.2 else 0.0
    c = rng.random()
    if c < 0.6:
        codec, quality = "h264", rng.randint(18, 32)
    elif c < 0.75:
        codec, quality = "jpeg", rng.randint(40, 90)
    else:
        codec, quality = None, 0
    return Recipe(blur, kernel, noise, codec, quality)


def clip_rng(name: str) -> random.Random:
    """The evaluation's generator for a clip: the same recipe for the same clip name, every run."""
    return random.Random(zlib.crc32(name.encode()))


def degrade(hr: torch.Tensor, kind: str = "bicubic", rng: random.Random | None = None) -> torch.Tensor:
    """High-res (..., 3, H, W) float in [0, 1] -> low-res (..., 3, H/4, W/4), 8-bit values.

    ``realistic`` draws its recipe from ``rng`` (default: the module's ``random``, which the DataLoader
    seeds per worker); the leading dimensions are then one clip's frames, in time order.
    """
    if kind == "bicubic":
        return apply_recipe(hr, BICUBIC)
    if kind == "blur":
        return apply_recipe(hr, BLUR)
    if kind == "realistic":
        rng = rng or random
        return apply_recipe(hr, sample_recipe(rng), rng)
    raise ValueError(f"degradation must be one of {list(DEGRADATIONS)}, got {kind!r}")


def apply_recipe(hr: torch.Tensor, recipe: Recipe, rng: random.Random | None = None) -> torch.Tensor:
    """Blur, downscale, quantise, add noise (drawn from ``rng``), compress: (..., 3, H, W) -> (..., 3, H/4, W/4)."""
    lead, (c, h, w) = hr.shape[:-3], hr.shape[-3:]
    if h % SCALE or w % SCALE:
        raise ValueError(f"high-res size {h}x{w} is not a multiple of {SCALE}; crop it first (crop_to_scale)")
    x = hr.reshape(-1, c, h, w)  # (N, 3, H, W)
    if recipe.blur is not None:
        x = _blur(x, *recipe.blur)
    size = (h // SCALE, w // SCALE)
    if recipe.kernel == "nearest":
        lr = x[:, :, ::SCALE, ::SCALE]
    elif recipe.kernel == "area":
        lr = F.interpolate(x, size=size, mode="area")
    elif recipe.kernel in ("bicubic", "bilinear"):
        lr = F.interpolate(x, size=size, mode=recipe.kernel, antialias=True, align_corners=False)
    else:
        raise ValueError(f"unknown downscaling kernel {recipe.kernel!r}")
    lr = lr.clamp(0, 1).mul(255).round()  # (N, 3, h, w) 8-bit levels
    if recipe.noise > 0:
        gen = torch.Generator().manual_seed((rng or random).getrandbits(63))
        lr = (lr + torch.randn(lr.shape, generator=gen) * recipe.noise).clamp(0, 255).round()
    if recipe.codec is not None:
        frames = lr.to(torch.uint8).permute(0, 2, 3, 1).numpy()  # (N, h, w, 3)
        frames = (
            h264_roundtrip(frames, recipe.quality) if recipe.codec == "h264" else jpeg_roundtrip(frames, recipe.quality)
        )
        lr = torch.from_numpy(frames).permute(0, 3, 1, 2).float()
    return lr.div(255).reshape(*lead, c, *size)


def _gaussian_kernel(sigma: float) -> torch.Tensor:
    radius = int(np.ceil(3 * sigma))
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k = torch.exp(-(x**2) / (2 * sigma**2))
    return k / k.sum()


def _blur(x: torch.Tensor, sx: float, sy: float, angle: float) -> torch.Tensor:
    """Gaussian blur of (N, c, H, W) with reflect padding: separable when isotropic and unrotated (BD's
    exact kernel), else a full rotated 2-D kernel."""
    c = x.shape[1]
    if sx == sy:
        k = _gaussian_kernel(sx).to(x)
        r = k.numel() // 2
        x = F.pad(x, (r, r, r, r), mode="reflect")
        x = F.conv2d(x, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
        return F.conv2d(x, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)
    r = int(np.ceil(3 * max(sx, sy)))
    ys, xs = torch.meshgrid(torch.arange(-r, r + 1.0), torch.arange(-r, r + 1.0), indexing="ij")
    u = xs * math.cos(angle) + ys * math.sin(angle)  # coordinates along the kernel's own axes
    v = -xs * math.sin(angle) + ys * math.cos(angle)
    k = torch.exp(-(u**2) / (2 * sx**2) - v**2 / (2 * sy**2))
    k = (k / k.sum()).to(x)
    x = F.pad(x, (r, r, r, r), mode="reflect")
    return F.conv2d(x, k.view(1, 1, *k.shape).expand(c, 1, -1, -1), groups=c)


def h264_roundtrip(frames: np.ndarray, crf: int, preset: str = H264_PRESET) -> np.ndarray:
    """Encode uint8 (t, h, w, 3) RGB with libx264 (``h264_encode``) in memory and decode it back."""
    return h264_decode(h264_encode(frames, crf, preset), frames.shape)


def h264_encode(frames: np.ndarray, crf: int, preset: str = H264_PRESET) -> bytes:
    """uint8 (t, h, w, 3) RGB -> an MP4 of libx264 (yuv420p, ``crf``, ``preset``, one thread), as a user's
    upload would be. Odd sides are padded by edge replication for 4:2:0 (``h264_decode`` crops them)."""
    t, h, w, _ = frames.shape
    ph, pw = h % 2, w % 2
    if ph or pw:
        frames = np.pad(frames, ((0, 0), (0, ph), (0, pw), (0, 0)), mode="edge")
    # fixed settings, one thread, explicit timestamps: as reproducible as libx264 gets. Seen here: 1-3
    # of 100 identical encodes still differ in a few macroblocks (PSNR to the source within ~0.1 dB)
    return encode_frames(frames, "mp4", "libx264", "yuv420p", 25, {"crf": str(crf), "preset": preset}, threads=1)


def h264_decode(data: bytes, shape: tuple[int, ...]) -> np.ndarray:
    """``h264_encode``'s MP4 -> uint8 frames of ``shape`` (t, h, w, 3) again."""
    t, h, w = shape[:3]
    decoded = decode_frames(data, threads=1)
    if len(decoded) != t:
        raise RuntimeError(f"H.264 round trip returned {len(decoded)} frames for {t}")
    return np.stack(decoded)[:, :h, :w]


def jpeg_roundtrip(frames: np.ndarray, quality: int) -> np.ndarray:
    """Each uint8 (h, w, 3) RGB frame through OpenCV's JPEG (4:2:0) at ``quality`` and back."""
    out = []
    for f in frames:
        ok, data = cv2.imencode(".jpg", cv2.cvtColor(f, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
        if not ok:
            raise RuntimeError("JPEG encoding failed")
        out.append(cv2.cvtColor(cv2.imdecode(data, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB))
    return np.stack(out)
