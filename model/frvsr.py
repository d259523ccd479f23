"""FRVSR (Sajjadi et al., CVPR 2018) for 4x video super-resolution: helpers, FNet, SRNet, the model,
checkpoint I/O and the one function that super-resolves a clip.

Conventions used throughout:
- images are float tensors in [0, 1], RGB, NCHW;
- flow is in pixels of the image it is applied to, channel 0 = x (right), channel 1 = y (down),
  and is a *backward* flow: ``out[p] = x[p + flow[p]]`` (see ``flow_warp``).
"""

from __future__ import annotations

import contextlib
import functools
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

def flow_warp(x: torch.Tensor, flow: torch.Tensor, flow_scale: int = 1) -> torch.Tensor:
    """Backward-warp ``x`` with ``flow``: ``out[:, :, i, j] = x[:, :, i + flow_y, j + flow_x]``.

    Args:
        x: (n, c, h, w) images.
        flow: (n, 2, h, w) displacement in pixels; channel 0 is x (columns), channel 1 is y (rows).
            With ``flow_scale`` s > 1 the flow is given at low resolution, (n, 2, h/s, w/s) in low-res
            pixels, and is upsampled bilinearly exactly like ``upscale_flow`` (the result equals
            ``flow_warp(x, upscale_flow(flow, s))``, but the scaling touches s*s fewer pixels).
    Returns:
        (n, c, h, w), bilinearly sampled, ``align_corners=False`` (pixel centres at +0.5), samples
        outside the image take the nearest border value.
    """
    n, _, h, w = x.shape
    if flow.shape[1] != 2 or (flow.shape[-2] * flow_scale, flow.shape[-1] * flow_scale) != (h, w):
        raise ValueError(f"flow_warp: x {tuple(x.shape)} and flow {tuple(flow.shape)} (scale {flow_scale}) do not match")
    # pixels -> grid_sample's normalised units (align_corners=False: one pixel is 2/w); a low-res pixel
    # is flow_scale high-res pixels. Scaling before the bilinear upsampling is exact: both are linear.
    units = torch.tensor([2.0 * flow_scale / w, 2.0 * flow_scale / h], device=flow.device).view(1, 2, 1, 1)
    disp = flow.float().contiguous() * units  # (n, 2, h/s, w/s)
    if flow_scale != 1:
        disp = F.interpolate(disp, scale_factor=flow_scale, mode="bilinear", align_corners=False)  # (n, 2, h, w)
    xs = (2 * torch.arange(w, device=x.device, dtype=disp.dtype) + 1) / w - 1  # pixel centres, normalised
    ys = (2 * torch.arange(h, device=x.device, dtype=disp.dtype) + 1) / h - 1
    base = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1)  # (h, w, 2): (x, y) per pixel
    grid = disp.permute(0, 2, 3, 1) + base  # (n, h, w, 2)
    return F.grid_sample(x, grid.to(x.dtype), mode="bilinear", padding_mode="border", align_corners=False)


def space_to_depth(x: torch.Tensor, block: int = SCALE) -> torch.Tensor:
    """(n, c, h*block, w*block) -> (n, c*block*block, h, w), channel order of ``F.pixel_unshuffle``.

    Written as view + permute: one copy, measured 3-4x faster on CPU than ``F.pixel_unshuffle``.
    """
    n, c, hb, wb = x.shape
    h, w = hb // block, wb // block
    x = x.reshape(n, c, h, block, w, block).permute(0, 1, 3, 5, 2, 4)  # (n, c, by, bx, h, w)
    return x.reshape(n, c * block * block, h, w)


def depth_to_space(x: torch.Tensor, block: int = SCALE) -> torch.Tensor:
    """(n, c*block*block, h, w) -> (n, c, h*block, w*block): ``F.pixel_shuffle``, as view + permute (faster)."""
    n, cbb, h, w = x.shape
    c = cbb // (block * block)
    x = x.reshape(n, c, block, block, h, w).permute(0, 1, 4, 2, 5, 3)  # (n, c, h, by, w, bx)
    return x.reshape(n, c, h * block, w * block)


def upscale_flow(flow: torch.Tensor, scale: int = SCALE) -> torch.Tensor:
    """Low-res flow (n, 2, h, w) in low-res pixels -> (n, 2, h*scale, w*scale) in high-res pixels."""
    return F.interpolate(flow, scale_factor=scale, mode="bilinear", align_corners=False) * scale


def upsample_image(x: torch.Tensor, scale: int = SCALE) -> torch.Tensor:
    """Bicubic upsampling, SRNet's residual base: the network starts at bicubic quality and learns detail."""
    return F.interpolate(x, scale_factor=scale, mode="bicubic", align_corners=False)


@functools.lru_cache(maxsize=8)
def _bicubic_phase_kernel(device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """(3*16, 3, 5, 5) kernel K with ``pixel_shuffle(conv2d(replicate_pad(x, 2), K), 4) == upsample_image(x)``.

    Read off ``upsample_image`` itself (its response to single-pixel impulses), so it matches PyTorch's
    bicubic exactly, borders included (PyTorch clamps source indices, i.e. replicate padding by 2: each
    4x output pixel reads at most 2 low-res pixels either side of its own).
    """
    k = 2 * 2 + 1
    imp = torch.zeros(k * k, 1, 2 * k + 1, 2 * k + 1, dtype=torch.float64)  # one impulse per tap offset
    for t in range(k * k):
        imp[t, 0, k + t // k - 2, k + t % k - 2] = 1.0  # tap t = (u, v) of the output block at (k, k)
    up = F.interpolate(imp, scale_factor=SCALE, mode="bicubic", align_corners=False)  # (k*k, 1, 4*(2k+1), ...)
    block = up[:, 0, k * SCALE:(k + 1) * SCALE, k * SCALE:(k + 1) * SCALE]  # (k*k taps, 4 phases y, 4 phases x)
    per_phase = block.reshape(k, k, SCALE * SCALE).permute(2, 0, 1)  # (16 phases, 5, 5)
    kernel = torch.zeros(3 * SCALE * SCALE, 3, k, k, dtype=torch.float64)
    for c in range(3):  # pixel_shuffle reads channel c*16 + phase into colour c
        kernel[c * SCALE * SCALE:(c + 1) * SCALE * SCALE, c] = per_phase
    return kernel.to(device=device, dtype=dtype)


def upsample_image_phases(x: torch.Tensor) -> torch.Tensor:
    """``upsample_image`` computed at low resolution, before the pixel shuffle: (n, 3, h, w) -> (n, 48, h, w).

    ``pixel_shuffle(upsample_image_phases(x), 4)`` equals ``upsample_image(x)`` (to float rounding), so
    SRNet can add the bicubic residual to its last low-res convolution instead of adding two 4x images.
    Always computed in float32, also under autocast: the residual carries the picture.
    """
    with torch.autocast(x.device.type, enabled=False):
        x = x.float()
        return F.conv2d(F.pad(x, (2, 2, 2, 2), mode="replicate"), _bicubic_phase_kernel(x.device, x.dtype))


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


def _zero_init(conv: nn.Module) -> None:
    """A last layer that outputs zeros until trained (its weights still get gradients)."""
    nn.init.zeros_(conv.weight)
    nn.init.zeros_(conv.bias)


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
        _zero_init(self.body[-1])  # a fresh FNet predicts zero flow (the identity warp), not random displacements

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
        if cfg.residual:
            # start exactly at the bicubic residual: a fresh model already scores bicubic, and training
            # only ever adds detail (a random last layer would first have to unlearn its own noise)
            _zero_init(self.tail[0] if cfg.upsampler == "pixelshuffle" else self.tail[-1])

    def forward(self, x: torch.Tensor, base: torch.Tensor | None = None) -> torch.Tensor:
        """``base``: the bicubic residual as low-res phases (``upsample_image_phases``), or None."""
        feat = self.body(F.relu(self.head(x)))  # (n, c, h, w)
        if isinstance(self.tail[-1], nn.PixelShuffle):
            y = self.tail[0](feat)  # (n, 48, h, w): the 16 sub-pixel phases of each colour
            if base is not None:
                y = y + base  # the residual added at low resolution: 16x fewer pixels than adding at 4x
            return depth_to_space(y)  # (n, 3, 4h, 4w); what tail[1] (nn.PixelShuffle) does, faster
        hr = self.tail(feat)
        return hr if base is None else hr + depth_to_space(base)


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
        flow = self.fnet(lr, lr_prev).float()  # (n, 2, h, w); float32 even under autocast: it steers the warp
        warped = flow_warp(hr_prev, flow, flow_scale=SCALE)  # (n, 3, 4h, 4w), flow upscaled inside
        base = upsample_image_phases(lr) if self.cfg.residual else None  # (n, 48, h, w)
        hr = self.srnet(torch.cat((lr, space_to_depth(warped)), dim=1), base)  # (n, 3, 4h, 4w)
        return hr.float(), flow

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


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu", channels_last: bool = True) -> tuple[FRVSR, dict]:
    """Rebuild the exact architecture stored in ``path``; returns (model in eval mode, checkpoint dict).

    ``channels_last`` lays the weights out NHWC, which oneDNN (CPU) and cuDNN (GPU) convolve faster
    (measured: 1.2-1.3x per frame on CPU); training from a checkpoint passes False and stays NCHW.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        model = FRVSR(FRVSRConfig.from_dict(ckpt["model_args"]))
        model.load_state_dict(ckpt["model"])
    except Exception as e:  # a wrong or damaged file: say which one
        raise ValueError(f"cannot load FRVSR checkpoint {path}: {e}") from e
    model = model.to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model.eval(), ckpt


def _unwrap(model: nn.Module) -> FRVSR:
    return model.module if hasattr(model, "module") else model


# ----------------------------------------------------------------------------- clip inference

PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def native_bf16(device: torch.device | str) -> bool:
    """Whether ``device`` runs bfloat16 convolutions natively (CPU: AVX512-BF16 or AMX; CUDA: Ampere+)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        checks = (getattr(torch.cpu, "_is_avx512_bf16_supported", None), getattr(torch.cpu, "_is_amx_tile_supported", None))
        return any(bool(c()) for c in checks if c is not None)
    return False


def check_precision(precision: str) -> str:
    """``precision`` if it is one of ``PRECISIONS``, else a ValueError listing them."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {list(PRECISIONS)}, got {precision!r}")
    return precision


def resolve_precision(precision: str, device: torch.device | str) -> str:
    """``auto`` -> ``bf16`` where the hardware runs it natively, else ``fp32``; others are checked and kept.

    Convolutions run in the reduced type; the flow, the warp, the bicubic residual and the output stay
    float32 (see ``FRVSR.step``), so bf16 moves the output by well under one 8-bit level.
    """
    if check_precision(precision) == "auto":
        return "bf16" if native_bf16(device) else "fp32"
    return precision


def autocast(precision: str, device: torch.device | str) -> contextlib.AbstractContextManager:
    """The autocast context for a resolved precision (a no-op for fp32)."""
    device = torch.device(device)
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    return torch.autocast(device.type, dtype=dtype)


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
    precision: str = "auto",
) -> Iterator[np.ndarray]:
    """Super-resolve a clip frame by frame, streaming: uint8 (h, w, 3) RGB in -> uint8 (4h, 4w, 3) out.

    The one inference path: training validation, client_test.py and the TorchServe handler call it.
    Frames are consumed lazily, so a decoder generator can feed it and an encoder can drain it
    without the clip ever being held in memory. ``precision``: see ``resolve_precision``.
    """
    model = _unwrap(model)
    device = torch.device(device) if device is not None else next(model.parameters()).device
    amp = autocast(resolve_precision(precision, device), device)
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
            for hr, _ in _under(amp, model.iterate(tensors(), cut_threshold=cut_threshold)):
                yield to_uint8(hr)
    finally:
        model.train(was_training)


def _under(ctx: contextlib.AbstractContextManager, it: Iterator) -> Iterator:
    """Run each step of ``it`` inside ``ctx`` without holding ``ctx`` open while the consumer runs.

    Autocast state is thread-local and global to the thread: entered around a ``yield`` it would leak
    into the caller's code (another model, an encoder) between frames.
    """
    while True:
        with ctx:
            try:
                item = next(it)
            except StopIteration:
                return
        yield item
