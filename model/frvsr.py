"""FRVSR (Sajjadi et al., CVPR 2018) for 4x video super-resolution: helpers, FNet, SRNet, the model,
checkpoint I/O and the one function that super-resolves a clip.

Conventions used throughout:
- images are float tensors in [0, 1], RGB, NCHW;
- flow is in pixels of the image it is applied to, channel 0 = x (right), channel 1 = y (down),
  and is a *backward* flow: ``out[p] = x[p + flow[p]]`` (see ``flow_warp``).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

log = logging.getLogger(__name__)

SCALE = 4  # the product is 4x; FNet pools three times, so low-res sides are padded to multiples of 8
PAD_MULTIPLE = 8

# Scene-cut detection: mean absolute low-res frame difference (RGB in [0, 1]) above which the
# recurrence restarts from a blank estimate. Consecutive frames of one shot rarely exceed ~0.08 even
# with fast motion; a cut between unrelated shots is typically 0.15-0.4.
DEFAULT_CUT_THRESHOLD = 0.12


# ----------------------------------------------------------------------------- helpers

def flow_warp(x: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """Backward-warp ``x`` with ``flow``: ``out[:, :, i, j] = x[:, :, i + flow_y, j + flow_x]``.

    Args:
        x: (n, c, h, w) images.
        flow: (n, 2, h, w) displacement in pixels; channel 0 is x (columns), channel 1 is y (rows).
    Returns:
        (n, c, h, w), bilinearly sampled, ``align_corners=False`` (pixel centres at +0.5), samples
        outside the image take the nearest border value.
    """
    if x.shape[-2:] != flow.shape[-2:] or flow.shape[1] != 2:
        raise ValueError(f"flow_warp: x {tuple(x.shape)} and flow {tuple(flow.shape)} do not match")
    n, _, h, w = x.shape
    ys = torch.arange(h, device=x.device, dtype=flow.dtype)
    xs = torch.arange(w, device=x.device, dtype=flow.dtype)
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")  # (h, w) each
    px = gx + flow[:, 0]  # (n, h, w)
    py = gy + flow[:, 1]
    # pixel index -> normalised [-1, 1] with align_corners=False
    grid = torch.stack(((2 * px + 1) / w - 1, (2 * py + 1) / h - 1), dim=-1)  # (n, h, w, 2)
    return F.grid_sample(x, grid.to(x.dtype), mode="bilinear", padding_mode="border", align_corners=False)


def space_to_depth(x: torch.Tensor, block: int = SCALE) -> torch.Tensor:
    """(n, c, h*block, w*block) -> (n, c*block*block, h, w); the inverse of pixel_shuffle."""
    return F.pixel_unshuffle(x, block)


def upscale_flow(flow: torch.Tensor, scale: int = SCALE) -> torch.Tensor:
    """Low-res flow (n, 2, h, w) in low-res pixels -> (n, 2, h*scale, w*scale) in high-res pixels."""
    return F.interpolate(flow, scale_factor=scale, mode="bilinear", align_corners=False) * scale


def upsample_image(x: torch.Tensor, scale: int = SCALE) -> torch.Tensor:
    """Bicubic upsampling, SRNet's residual base: the network starts at bicubic quality and learns detail."""
    return F.interpolate(x, scale_factor=scale, mode="bicubic", align_corners=False)


def pad_to_multiple(x: torch.Tensor, multiple: int = PAD_MULTIPLE) -> torch.Tensor:
    """Pad the bottom/right of (n, c, h, w) so both sides are multiples of ``multiple``.

    Reflect padding where the side is long enough, replicate otherwise (reflect needs pad < side).
    """
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph == 0 and pw == 0:
        return x
    mode = "reflect" if (ph < h and pw < w) else "replicate"
    return F.pad(x, (0, pw, 0, ph), mode=mode)


# ----------------------------------------------------------------------------- configuration

@dataclass
class FRVSRConfig:
    """Architecture hyper-parameters; stored in every checkpoint so loaders rebuild it exactly."""

    channels: int = 64  # SRNet width: the main cost knob (time grows ~quadratically)
    blocks: int = 10  # SRNet residual blocks: depth, cost grows linearly
    fnet_channels: int = 32  # FNet base width (paper: 32-64-128 encoder); flow needs little capacity
    upsampler: str = "pixelshuffle"  # 'pixelshuffle' (conv at low res) or 'deconv' (paper: 2 transposed convs at high res)
    residual: bool = True  # add a bicubic upsample of the input: SRNet only learns the detail
    max_flow: float = 24.0  # FNet's tanh output is scaled to +-max_flow low-res pixels

    def __post_init__(self) -> None:
        if self.upsampler not in ("pixelshuffle", "deconv"):
            raise ValueError(f"upsampler must be 'pixelshuffle' or 'deconv', got {self.upsampler!r}")
        if self.channels < 1 or self.blocks < 0 or self.fnet_channels < 1:
            raise ValueError(f"channels, fnet_channels must be >= 1 and blocks >= 0, got {self}")

    @classmethod
    def from_dict(cls, d: dict) -> "FRVSRConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown model settings {sorted(unknown)}; valid: {sorted(known)}")
        return cls(**d)


# ----------------------------------------------------------------------------- networks

def _conv(cin: int, cout: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, padding=1)


class FNet(nn.Module):
    """Flow between two low-res frames: (n, 3, h, w) x2 -> (n, 2, h, w) in pixels; h, w multiples of 8."""

    def __init__(self, base: int = 32, max_flow: float = 24.0):
        super().__init__()
        self.max_flow = max_flow
        act = nn.LeakyReLU(0.2, inplace=True)
        chans = [base, base * 2, base * 4]
        enc, cin = [], 6
        for c in chans:  # encoder: 2 convs then 2x max-pool, three times
            enc += [_conv(cin, c), act, _conv(c, c), act, nn.MaxPool2d(2)]
            cin = c
        dec = []
        for c in [base * 8, base * 4, base * 2]:  # decoder: 2 convs then 2x bilinear upsample
            dec += [_conv(cin, c), act, _conv(c, c), act, nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)]
            cin = c
        self.body = nn.Sequential(*enc, *dec, _conv(cin, base), act, _conv(base, 2))

    def forward(self, cur: torch.Tensor, prev: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.body(torch.cat((cur, prev), dim=1))) * self.max_flow


class ResBlock(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.conv1, self.conv2 = _conv(c, c), _conv(c, c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.relu(self.conv1(x)))


class SRNet(nn.Module):
    """(n, 3 + 3*16, h, w) = [lr, space_to_depth(warped estimate)] -> (n, 3, 4h, 4w)."""

    def __init__(self, cfg: FRVSRConfig):
        super().__init__()
        c = cfg.channels
        self.head = _conv(3 + 3 * SCALE * SCALE, c)
        self.body = nn.Sequential(*[ResBlock(c) for _ in range(cfg.blocks)])
        if cfg.upsampler == "pixelshuffle":
            # all convolutions at low resolution; one shuffle to 4x at the end
            self.tail = nn.Sequential(_conv(c, 3 * SCALE * SCALE), nn.PixelShuffle(SCALE))
        else:
            # the paper's upsampler: two stride-2 transposed convolutions, then a conv at 4x
            self.tail = nn.Sequential(
                nn.ConvTranspose2d(c, c, 4, stride=2, padding=1), nn.ReLU(inplace=True),
                nn.ConvTranspose2d(c, c, 4, stride=2, padding=1), nn.ReLU(inplace=True),
                _conv(c, 3),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.tail(self.body(F.relu(self.head(x))))


class FRVSR(nn.Module):
    """Frame-recurrent SR: flow, warp the previous estimate, reconstruct. No state lives on the module."""

    def __init__(self, cfg: FRVSRConfig | None = None):
        super().__init__()
        self.cfg = cfg or FRVSRConfig()
        self.fnet = FNet(self.cfg.fnet_channels, self.cfg.max_flow)
        self.srnet = SRNet(self.cfg)

    def step(self, lr: torch.Tensor, lr_prev: torch.Tensor, hr_prev: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One recurrence step on padded frames.

        Args:
            lr, lr_prev: (n, 3, h, w), h and w multiples of 8.
            hr_prev: (n, 3, 4h, 4w), the previous output (zeros at a clip start or scene cut).
        Returns:
            hr (n, 3, 4h, 4w) and the low-res flow (n, 2, h, w) used to warp.
        """
        flow = self.fnet(lr, lr_prev)  # (n, 2, h, w)
        warped = flow_warp(hr_prev, upscale_flow(flow))  # (n, 3, 4h, 4w)
        hr = self.srnet(torch.cat((lr, space_to_depth(warped)), dim=1))
        if self.cfg.residual:
            hr = hr + upsample_image(lr)
        return hr, flow

    def iterate(self, frames: Iterable[torch.Tensor], cut_threshold: float | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The recurrence over a clip: yields ``(hr, flow)`` per input frame, in order.

        Args:
            frames: iterable of (n, 3, h, w) low-res frames in [0, 1]; any h, w (padded internally).
            cut_threshold: restart the recurrence for a sample whose mean absolute difference to its
                previous frame exceeds this (a scene cut); None never restarts.
        Yields:
            hr: (n, 3, 4h, 4w) cropped to exactly 4x the input; flow: (n, 2, h, w) low-res flow
            (zeros for the first frame).
        """
        lr_prev = hr_prev = None
        for lr in frames:
            h, w = lr.shape[-2:]
            lr_p = pad_to_multiple(lr)
            if hr_prev is None:
                lr_prev, hr_prev = lr_p, lr_p.new_zeros(lr_p.shape[0], 3, lr_p.shape[2] * SCALE, lr_p.shape[3] * SCALE)
            elif cut_threshold is not None:
                diff = (lr_p - lr_prev).abs().mean(dim=(1, 2, 3))  # (n,)
                cut = diff > cut_threshold
                if bool(cut.any()):
                    keep = (~cut).to(hr_prev.dtype).view(-1, 1, 1, 1)
                    hr_prev = hr_prev * keep
                    lr_prev = torch.where(cut.view(-1, 1, 1, 1), lr_p, lr_prev)
            hr, flow = self.step(lr_p, lr_prev, hr_prev)
            lr_prev, hr_prev = lr_p, hr
            yield hr[..., : h * SCALE, : w * SCALE], flow[..., :h, :w]

    def forward(self, lr: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Training entry: (b, t, 3, h, w) -> hr (b, t, 3, 4h, 4w) and flows (b, t, 2, h, w)."""
        outs = list(self.iterate(lr.unbind(dim=1)))
        return torch.stack([o[0] for o in outs], dim=1), torch.stack([o[1] for o in outs], dim=1)


# ----------------------------------------------------------------------------- checkpoints

def save_checkpoint(path: str | Path, model: FRVSR, **extra) -> None:
    """Atomically write ``{'model_args': cfg dict, 'model': state_dict, **extra}``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    state = {k: v.detach().cpu() for k, v in _unwrap(model).state_dict().items()}
    torch.save({"model_args": asdict(_unwrap(model).cfg), "model": state, **extra}, tmp)
    tmp.replace(path)


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> tuple[FRVSR, dict]:
    """Rebuild the exact architecture stored in ``path``; returns (model in eval mode, checkpoint dict)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        model = FRVSR(FRVSRConfig.from_dict(ckpt["model_args"]))
        model.load_state_dict(ckpt["model"])
    except Exception as e:  # a wrong or damaged file: say which one
        raise ValueError(f"cannot load FRVSR checkpoint {path}: {e}") from e
    return model.to(device).eval(), ckpt


def _unwrap(model: nn.Module) -> FRVSR:
    return model.module if hasattr(model, "module") else model


# ----------------------------------------------------------------------------- clip inference

def to_tensor(frame: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
    """uint8 (h, w, 3) RGB -> float (1, 3, h, w) in [0, 1] on ``device``."""
    t = torch.from_numpy(np.ascontiguousarray(frame)).to(device)
    return t.permute(2, 0, 1).unsqueeze(0).float().div_(255.0)


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """float (1, 3, h, w) in [0, 1] -> uint8 (h, w, 3) RGB (rounded, clamped)."""
    return x[0].clamp(0, 1).mul(255).round_().to(torch.uint8).permute(1, 2, 0).cpu().numpy()


def super_resolve(
    model: FRVSR,
    frames: Iterable[np.ndarray],
    device: torch.device | str | None = None,
    cut_threshold: float | None = DEFAULT_CUT_THRESHOLD,
) -> Iterator[np.ndarray]:
    """Super-resolve a clip frame by frame, streaming: uint8 (h, w, 3) RGB in -> uint8 (4h, 4w, 3) out.

    The one inference path: training validation, client_test.py and the TorchServe handler call it.
    Frames are consumed lazily, so a decoder generator can feed it and an encoder can drain it
    without the clip ever being held in memory.
    """
    model = _unwrap(model)
    device = torch.device(device) if device is not None else next(model.parameters()).device
    size = None

    def tensors() -> Iterator[torch.Tensor]:
        nonlocal size
        for i, f in enumerate(frames):
            if f.ndim != 3 or f.shape[2] != 3 or f.dtype != np.uint8:
                raise ValueError(f"frame {i}: expected uint8 (h, w, 3) RGB, got {f.dtype} {f.shape}")
            if size is None:
                size = f.shape
            elif f.shape != size:
                raise ValueError(f"frame {i} has size {f.shape[:2]}, the clip started at {size[:2]}")
            yield to_tensor(f, device)

    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for hr, _ in model.iterate(tensors(), cut_threshold=cut_threshold):
                yield to_uint8(hr)
    finally:
        model.train(was_training)
