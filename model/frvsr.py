"""FRVSR (Sajjadi et al., CVPR 2018) for 4x video super-resolution, the network alone: helpers, the
configuration, FNet, SRNet, and the model (checkpoints: ``model.checkpoint``; running it on a clip:
``model.inference``).

Conventions used throughout:
- images are float tensors in [0, 1], RGB, NCHW;
- flow is in pixels of the image it is applied to, channel 0 = x (right), channel 1 = y (down),
  and is a *backward* flow: ``out[p] = x[p + flow[p]]`` (see ``flow_warp``).
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, fields

import torch
import torch.nn as nn
import torch.nn.functional as F

from common.ahead import ahead

log = logging.getLogger(__name__)

SCALE = 4  # the product is 4x; FNet pools three times, so low-res sides are padded to multiples of 8
PAD_MULTIPLE = 8


# ----------------------------------------------------------------------------- helpers


def flow_warp(x: torch.Tensor, flow: torch.Tensor, upscale: int = 1) -> torch.Tensor:
    """Backward-warp ``x`` with ``flow``: ``out[:, :, i, j] = x[:, :, i + flow_y, j + flow_x]``.

    Args:
        x: (n, c, h, w) images.
        flow: (n, 2, h, w) displacement in pixels; channel 0 is x (columns), channel 1 is y (rows).
            With ``upscale`` s > 1 the flow is given at low resolution, (n, 2, h/s, w/s) in low-res
            pixels, and is upsampled bilinearly exactly like ``upscale_flow`` (the result equals
            ``flow_warp(x, upscale_flow(flow, s))``, but the scaling touches s*s fewer pixels).
    Returns:
        (n, c, h, w), bilinearly sampled, ``align_corners=False`` (pixel centres at +0.5), samples
        outside the image take the nearest border value.
    """
    n, _, h, w = x.shape
    if flow.shape[1] != 2 or (flow.shape[-2] * upscale, flow.shape[-1] * upscale) != (h, w):
        raise ValueError(f"flow_warp: x {tuple(x.shape)} and flow {tuple(flow.shape)} (upscale {upscale}) do not match")
    # pixels -> grid_sample's normalised units (align_corners=False: one pixel is 2/w); a low-res pixel
    # is ``upscale`` high-res pixels. Scaling before the bilinear upsampling is exact: both are linear.
    units = torch.tensor([2.0 * upscale / w, 2.0 * upscale / h], device=flow.device).view(1, 2, 1, 1)
    disp = flow.float().contiguous() * units  # (n, 2, h/s, w/s)
    if upscale != 1:
        disp = F.interpolate(disp, scale_factor=upscale, mode="bilinear", align_corners=False)  # (n, 2, h, w)
    xs = (2 * torch.arange(w, device=x.device, dtype=disp.dtype) + 1) / w - 1  # pixel centres, normalised
    ys = (2 * torch.arange(h, device=x.device, dtype=disp.dtype) + 1) / h - 1
    base = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1)  # (h, w, 2): (x, y) per pixel
    grid = disp.permute(0, 2, 3, 1) + base  # (n, h, w, 2)
    # sampled in float32 whatever x's dtype: a bf16 grid is off by up to ~1 px at a few hundred pixels
    out = F.grid_sample(x.float(), grid.float(), mode="bilinear", padding_mode="border", align_corners=False)
    return out.to(x.dtype)


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
    block = up[:, 0, k * SCALE : (k + 1) * SCALE, k * SCALE : (k + 1) * SCALE]  # (k*k taps, 4 phases y, 4 phases x)
    per_phase = block.reshape(k, k, SCALE * SCALE).permute(2, 0, 1)  # (16 phases, 5, 5)
    kernel = torch.zeros(3 * SCALE * SCALE, 3, k, k, dtype=torch.float64)
    for c in range(3):  # pixel_shuffle reads channel c*16 + phase into colour c
        kernel[c * SCALE * SCALE : (c + 1) * SCALE * SCALE, c] = per_phase
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


def _in_modes(items: Iterator) -> Iterator:
    """``items`` consumed under the calling thread's grad and inference modes (both are thread-local), for
    iterating in another thread (``ahead``)."""
    inference, grad = torch.is_inference_mode_enabled(), torch.is_grad_enabled()

    def run() -> Iterator:
        with torch.inference_mode(inference), torch.set_grad_enabled(grad):
            yield from items

    return run()


# ----------------------------------------------------------------------------- configuration


@dataclass
class FRVSRConfig:
    """Architecture hyper-parameters, the single source of their defaults (the shipped default model's:
    ``model/pretrained/MODEL_CARD.md``);
    stored in every checkpoint so loaders rebuild it exactly."""

    channels: int = 48  # SRNet width: the main cost knob (time grows ~quadratically)
    blocks: int = 8  # SRNet residual blocks: depth, cost grows linearly
    fnet_channels: int = 12  # FNet base width (paper: 32-64-128 encoder); flow needs little capacity
    # 'pixelshuffle' (conv at low res) or 'deconv' (paper: 2 transposed convs at high res)
    upsampler: str = "pixelshuffle"
    residual: bool = True  # add a bicubic upsample of the input: SRNet only learns the detail
    max_flow: float = 24.0  # FNet's tanh output is scaled to +-max_flow low-res pixels
    # channels of a low-res feature state carried along the recurrence beside the estimate (RLSP/RRN-style,
    # warped with the same flow); 0 = plain FRVSR
    hidden: int = 32
    # SRNet's residual blocks: 'plain' 3x3 convolutions, or 'rep' (each 3x3 trained beside a 1x1 branch, summed;
    # ``FRVSR.fused`` folds them into one 3x3 for serving: the same outputs, a plain network)
    block: str = "plain"
    # channels of a low-res feature per frame from a backward recurrence over the whole clip (last frame to first,
    # BasicVSR-style), read by SRNet beside the frame: what the frames after this one show; 0 = none (plain FRVSR,
    # which streams: with it every flow and the backward pass come before the first output frame)
    backward: int = 0
    backward_blocks: int = 2  # residual blocks of the backward recurrence's cell

    def __post_init__(self) -> None:
        if self.upsampler not in ("pixelshuffle", "deconv"):
            raise ValueError(f"upsampler must be 'pixelshuffle' or 'deconv', got {self.upsampler!r}")
        if self.block not in ("plain", "rep"):
            raise ValueError(f"block must be 'plain' or 'rep', got {self.block!r}")
        if self.channels < 1 or self.blocks < 0 or self.fnet_channels < 1 or self.hidden < 0 or self.backward < 0:
            raise ValueError(f"channels, fnet_channels must be >= 1, blocks, hidden, backward >= 0, got {self}")

    @classmethod
    def from_dict(cls, d: dict) -> FRVSRConfig:
        """From a checkpoint's ``model_args``; a field the checkpoint predates takes the value that
        reproduces the network it was written with (``ADDED_LATER``), not today's default."""
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown model settings {sorted(unknown)}; valid: {sorted(known)}")
        return cls(**{**ADDED_LATER, **d})


ADDED_LATER = {"hidden": 0, "backward": 0}  # fields added after checkpoints were shipped, with their behaviour before


# ----------------------------------------------------------------------------- networks


def _conv(cin: int, cout: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, padding=1)


def _zero_init(conv: nn.Module) -> None:
    """A last layer that outputs zeros until trained (its weights still get gradients)."""
    nn.init.zeros_(conv.weight)
    nn.init.zeros_(conv.bias)


class FNet(nn.Module):
    """Flow between two low-res frames: (n, 3, h, w) x2 -> (n, 2, h, w) in pixels; h, w multiples of 8."""

    def __init__(self, base: int, max_flow: float):
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
            dec += [
                _conv(cin, c),
                act,
                _conv(c, c),
                act,
                nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
            ]
            cin = c
        self.body = nn.Sequential(*enc, *dec, _conv(cin, base), act, _conv(base, 2))
        _zero_init(self.body[-1])  # a fresh FNet predicts zero flow (the identity warp), not random displacements

    def forward(self, cur: torch.Tensor, prev: torch.Tensor) -> torch.Tensor:
        x = torch.cat((cur, prev), dim=1).to(self.body[0].weight.dtype)  # (n, 6, h, w) in the weights' type
        return torch.tanh(self.body(x).float()) * self.max_flow


class RepConv(nn.Module):
    """A 3x3 convolution trained with a parallel 1x1 branch (RepVGG's re-parameterisation, without its batch
    norms): (n, c, h, w) -> (n, c, h, w). ``fused`` is the one 3x3 convolution that computes the same."""

    def __init__(self, c: int):
        super().__init__()
        self.conv3, self.conv1 = _conv(c, c), nn.Conv2d(c, c, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv3(x) + self.conv1(x)

    def fused(self) -> nn.Conv2d:
        conv = _conv(self.conv3.in_channels, self.conv3.out_channels)
        with torch.no_grad():
            conv.weight.copy_(self.conv3.weight + F.pad(self.conv1.weight, (1, 1, 1, 1)))  # the 1x1 at the centre tap
            conv.bias.copy_(self.conv3.bias + self.conv1.bias)
        return conv


class ResBlock(nn.Module):
    def __init__(self, c: int, rep: bool = False):
        super().__init__()
        self.conv1, self.conv2 = (RepConv(c), RepConv(c)) if rep else (_conv(c, c), _conv(c, c))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.relu(self.conv1(x)))


class BNet(nn.Module):
    """The backward recurrence's cell: [lr (n, 3, h, w), the next frame's feature warped onto this frame
    (n, c, h, w)] -> this frame's feature (n, c, h, w)."""

    def __init__(self, c: int, blocks: int, rep: bool = False):
        super().__init__()
        self.head = _conv(3 + c, c)
        self.body = nn.Sequential(*[ResBlock(c, rep=rep) for _ in range(blocks)])

    def forward(self, lr: torch.Tensor, nxt: torch.Tensor) -> torch.Tensor:
        return self.body(F.relu(self.head(torch.cat((lr, nxt), dim=1).to(self.head.weight.dtype))))


class SRNet(nn.Module):
    """(n, 3 + 3*16 + hidden + backward, h, w) = [lr, space_to_depth(warped estimate), warped state, backward
    feature] -> (n, 3, 4h, 4w) and the next state (n, hidden, h, w) (None when ``cfg.hidden`` is 0)."""

    def __init__(self, cfg: FRVSRConfig):
        super().__init__()
        c = cfg.channels
        self.head = _conv(3 + 3 * SCALE * SCALE + cfg.hidden + cfg.backward, c)
        self.body = nn.Sequential(*[ResBlock(c, rep=cfg.block == "rep") for _ in range(cfg.blocks)])
        self.state = _conv(c, cfg.hidden) if cfg.hidden else None
        self.pixelshuffle = cfg.upsampler == "pixelshuffle"
        if self.pixelshuffle:
            # all convolutions at low resolution: the 16 sub-pixel phases of each colour, shuffled to 4x
            self.upsample = _conv(c, 3 * SCALE * SCALE)
            last = self.upsample
        else:
            # the paper's upsampler: two stride-2 transposed convolutions, then a conv at 4x
            self.upsample = nn.Sequential(
                nn.ConvTranspose2d(c, c, 4, stride=2, padding=1),
                nn.ReLU(inplace=True),
                nn.ConvTranspose2d(c, c, 4, stride=2, padding=1),
                nn.ReLU(inplace=True),
                _conv(c, 3),
            )
            last = self.upsample[-1]
        if cfg.residual:
            # start exactly at the bicubic residual: a fresh model already scores bicubic, and training
            # only ever adds detail (a random last layer would first have to unlearn its own noise)
            _zero_init(last)

    def forward(self, x: torch.Tensor, base: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``base``: the bicubic residual as low-res phases (``upsample_image_phases``), or None; ``x`` is cast to
        the weights' type (bf16 weights: ``model.precision.reduced_precision``), the residual added in float32."""
        feat = self.body(F.relu(self.head(x.to(self.head.weight.dtype))))  # (n, c, h, w)
        state = F.relu(self.state(feat)) if self.state is not None else None  # (n, hidden, h, w)
        if self.pixelshuffle:
            y = self.upsample(feat)  # (n, 48, h, w): the 16 sub-pixel phases of each colour
            if base is not None:
                y = y + base  # the residual added at low resolution: 16x fewer pixels than adding at 4x
            return depth_to_space(y), state  # (n, 3, 4h, 4w)
        hr = self.upsample(feat)
        return (hr if base is None else hr + depth_to_space(base)), state


class FRVSR(nn.Module):
    """Frame-recurrent SR: flow, warp the previous estimate, reconstruct. No state lives on the module."""

    # int8 (model.quantize): SRNet, its head (the frame, the warped estimate and state) and upsampling convolutions
    # kept bf16: all-int8 cost 0.10 dB on the Vimeo list, this 0.02 (bench/results/int8_study.md, runtimes.md)
    INT8 = {"srnet": ("head", "upsample")}

    def __init__(self, cfg: FRVSRConfig | None = None):
        super().__init__()
        self.cfg = cfg or FRVSRConfig()
        self.fnet = FNet(self.cfg.fnet_channels, self.cfg.max_flow)
        self.srnet = SRNet(self.cfg)
        self.bnet = (
            BNet(self.cfg.backward, self.cfg.backward_blocks, self.cfg.block == "rep") if self.cfg.backward else None
        )
        if self.bnet is not None:  # the backward cell int8 too, its head (the frame and the carried feature) bf16
            self.INT8 = {**FRVSR.INT8, "bnet": ("head",)}

    def fused(self) -> FRVSR:
        """This model with ``rep`` blocks folded into plain 3x3 convolutions (``block: plain``): the same outputs
        (to float rounding) from a plain network, the one to serve. A plain model is returned as it is."""
        if self.cfg.block == "plain":
            return self
        model = type(self)(dataclasses.replace(self.cfg, block="plain"))
        reps = {name: m for name, m in self.named_modules() if isinstance(m, RepConv)}
        state = {k: v for k, v in self.state_dict().items() if not any(k.startswith(f"{r}.") for r in reps)}
        for name, module in reps.items():
            conv = module.fused()
            state[f"{name}.weight"], state[f"{name}.bias"] = conv.weight.detach(), conv.bias.detach()
        model.load_state_dict(state)
        return model.to(next(self.parameters()).device).train(self.training)

    def grown(self, **changes: object) -> FRVSR:
        """This model with more capacity that computes the same outputs until it trains: ``block`` 'plain' -> 'rep'
        (each new 1x1 branch zero), ``backward`` from 0 (a fresh backward cell; SRNet's head reads its feature
        through zero weights), a larger ``hidden`` (the new state channels computed by fresh weights, read through
        zero ones). Every zero sits where its gradient is not zero, so all of it learns."""
        allowed = {"block", "backward", "backward_blocks", "hidden"}
        if set(changes) - allowed:
            raise ValueError(f"can only grow {sorted(allowed)}, not {sorted(set(changes) - allowed)}")
        cfg = dataclasses.replace(self.cfg, **changes)
        old = self.cfg
        if (old.block, cfg.block) == ("rep", "plain") or cfg.hidden < old.hidden:
            raise ValueError(f"{old} cannot grow into {cfg}: fewer state channels or rep -> plain (use fused)")
        if old.backward and (cfg.backward, cfg.backward_blocks) != (old.backward, old.backward_blocks):
            raise ValueError("a backward pass already there cannot change size")
        model = type(self)(cfg)
        mine, theirs = self.state_dict(), model.state_dict()
        rep = cfg.block == "rep" and old.block == "plain"
        with torch.no_grad():
            for name, value in mine.items():
                target = name
                if rep and name.startswith("srnet.body.") or rep and name.startswith("bnet.body."):
                    module, leaf = name.rsplit(".", 1)
                    target = f"{module}.conv3.{leaf}"
                if name in ("srnet.head.weight", "srnet.state.weight", "srnet.state.bias"):
                    continue
                theirs[target].copy_(value)
            for name in theirs:
                if (
                    rep
                    and name.endswith(
                        (".conv1.conv1.weight", ".conv1.conv1.bias", ".conv2.conv1.weight", ".conv2.conv1.bias")
                    )
                    and not (old.backward == 0 and name.startswith("bnet."))
                ):
                    theirs[name].zero_()
            head = theirs["srnet.head.weight"]  # inputs: [lr 3, estimate 48, state hidden, backward]
            head.zero_()
            kept = 3 + 3 * SCALE * SCALE + old.hidden
            head[:, :kept] = mine["srnet.head.weight"][:, :kept]
            if old.backward:
                head[:, 3 + 3 * SCALE * SCALE + cfg.hidden :] = mine["srnet.head.weight"][:, kept:]
            if old.hidden:
                theirs["srnet.state.weight"][: old.hidden] = mine["srnet.state.weight"]
                theirs["srnet.state.bias"][: old.hidden] = mine["srnet.state.bias"]
        model.load_state_dict(theirs)
        return model.to(next(self.parameters()).device).train(self.training)

    def step(
        self, lr: torch.Tensor, lr_prev: torch.Tensor, hr_prev: torch.Tensor, state_prev: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """One recurrence step on padded frames.

        Args:
            lr, lr_prev: (n, 3, h, w), h and w multiples of 8.
            hr_prev: (n, 3, 4h, 4w), the previous output (zeros at a clip start or scene cut).
            state_prev: (n, hidden, h, w), the previous feature state (zeros at a start or cut), or
                None when ``cfg.hidden`` is 0.
        Returns:
            hr (n, 3, 4h, 4w), the low-res flow (n, 2, h, w) used to warp, and the next state.
        """
        if self.cfg.backward:
            raise ValueError("a model with a backward pass runs over whole clips (iterate), not a step at a time")
        flow = self.fnet(lr, lr_prev).float()  # (n, 2, h, w); float32 even under autocast: it steers the warp
        hr, state = self.reconstruct(lr, flow, hr_prev, state_prev)
        return hr, flow, state

    def reconstruct(
        self,
        lr: torch.Tensor,
        flow: torch.Tensor,
        hr_prev: torch.Tensor,
        state_prev: torch.Tensor | None,
        feature: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The step after the flow: warp the previous estimate and state with ``flow``, run SRNet (with this frame's
        backward feature (n, backward, h, w) when ``cfg.backward``)."""
        warped = flow_warp(hr_prev, flow, upscale=SCALE)  # (n, 3, 4h, 4w), flow upscaled inside
        inputs = [lr, space_to_depth(warped)]  # (n, 3, h, w), (n, 48, h, w)
        if self.cfg.hidden:
            inputs.append(flow_warp(state_prev, flow))  # (n, hidden, h, w): the state follows the same motion
        if self.cfg.backward:
            inputs.append(feature)  # (n, backward, h, w)
        base = upsample_image_phases(lr) if self.cfg.residual else None  # (n, 48, h, w)
        hr, state = self.srnet(torch.cat(inputs, dim=1), base)  # (n, 3, 4h, 4w), (n, hidden, h, w) | None
        return hr.float(), state

    def flows(
        self,
        frames: Iterable[torch.Tensor],
        cut_threshold: float | None = None,
        given: Iterable[torch.Tensor] | None = None,
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, tuple[int, int]]]:
        """The part of the recurrence that needs no previous output: per frame (padded frame, its flow from the
        previous frame, the (n,) scene-cut mask or None, the frame's unpadded (h, w)). The first frame and a cut
        frame get the flow of the frame onto itself. ``given``: the flows, (n, 2, h, w) per frame, computed
        elsewhere (a frozen ``fnet``'s, ``train.flows``) instead of by ``fnet``; h and w multiples of 8."""
        given = iter(given) if given is not None else None
        lr_prev = None
        for lr in frames:
            lr_p = pad_to_multiple(lr)  # (n, 3, h8, w8)
            cut = None
            if lr_prev is None:
                lr_prev = lr_p
            elif cut_threshold is not None:
                diff = (lr_p - lr_prev).abs().mean(dim=(1, 2, 3))  # (n,)
                if bool((diff > cut_threshold).any()):
                    cut = diff > cut_threshold
                    lr_prev = torch.where(cut.view(-1, 1, 1, 1), lr_p, lr_prev)
            if given is None:
                flow = self.fnet(lr_p, lr_prev).float()  # float32: it steers the warp
            else:
                flow = next(given).float()
                if flow.shape[-2:] != lr_p.shape[-2:]:
                    raise ValueError(f"given flow {tuple(flow.shape)} does not match the frame {tuple(lr_p.shape)}")
            yield lr_p, flow, cut, lr.shape[-2:]
            lr_prev = lr_p

    def iterate(
        self,
        frames: Iterable[torch.Tensor],
        cut_threshold: float | None = None,
        flow_ahead: int = 0,
        flows: Iterable[torch.Tensor] | None = None,
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The recurrence over a clip: yields ``(hr, flow)`` per input frame, in order.

        Args:
            frames: iterable of (n, 3, h, w) low-res frames in [0, 1]; any h, w (padded internally).
            cut_threshold: restart the recurrence for a sample whose mean absolute difference to its
                previous frame exceeds this (a scene cut); None never restarts.
            flow_ahead: > 0 computes the flow (and reads ``frames``) in a thread of its own, up to this many
                frames ahead of the reconstruction: on two cores the flow of the next frame runs beside this
                frame's SRNet (inference; the thread runs under the caller's grad and inference modes).
            flows: per frame, its flow computed elsewhere (``flows``' ``given``), or None for ``fnet``'s.
        Yields:
            hr: (n, 3, 4h, 4w) cropped to exactly 4x the input; flow: (n, 2, h, w) low-res flow
            (zeros for the first frame).
        """
        steps = self.flows(frames, cut_threshold, flows)
        if flow_ahead:
            steps = ahead(_in_modes(steps), flow_ahead, name="frvsr-flow")
        features: Iterable[torch.Tensor | None] = itertools.repeat(None)
        if self.cfg.backward:  # the backward pass needs the clip's last frame first: every flow, then every feature
            steps = list(steps)
            features = self.backward_features(steps)
        hr_prev = state = None  # the recurrent state lives here, never on the module
        for (lr_p, flow, cut, (h, w)), feature in zip(steps, features, strict=False):
            n, _, hp, wp = lr_p.shape
            if hr_prev is None:
                hr_prev = lr_p.new_zeros(n, 3, hp * SCALE, wp * SCALE)
                state = lr_p.new_zeros(n, self.cfg.hidden, hp, wp) if self.cfg.hidden else None
            elif cut is not None:
                keep = (~cut).to(hr_prev.dtype).view(-1, 1, 1, 1)
                hr_prev = hr_prev * keep
                state = state * keep.to(state.dtype) if state is not None else None
            hr, state = self.reconstruct(lr_p, flow, hr_prev, state, feature)
            hr_prev = hr
            yield hr[..., : h * SCALE, : w * SCALE], flow[..., :h, :w]

    def backward_features(self, steps: list[tuple]) -> list[torch.Tensor]:
        """The backward recurrence over a whole clip's ``flows`` steps, last frame first: per frame its feature
        (n, backward, h8, w8), from the frame and the next frame's feature warped onto it. The warp from frame k to
        k+1 is minus frame k+1's flow (which maps k+1 onto k), read on frame k's grid: no second flow pass, exact
        for uniform motion. The recurrence restarts where frame k+1 is a scene cut, as the forward one does."""
        features: list[torch.Tensor] = [None] * len(steps)  # type: ignore[list-item]
        nxt = None
        for k in reversed(range(len(steps))):
            lr_p = steps[k][0]  # (n, 3, h8, w8)
            if nxt is None:
                nxt = lr_p.new_zeros(lr_p.shape[0], self.cfg.backward, *lr_p.shape[-2:])
            else:
                _, flow_next, cut_next, _ = steps[k + 1]
                nxt = flow_warp(nxt, -flow_next)
                if cut_next is not None:
                    nxt = nxt * (~cut_next).to(nxt.dtype).view(-1, 1, 1, 1)
            nxt = self.bnet(lr_p, nxt)
            features[k] = nxt
        return features

    def forward(self, lr: torch.Tensor, flows: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Training entry: (b, t, 3, h, w) -> hr (b, t, 3, 4h, 4w) and flows (b, t, 2, h, w); ``flows`` given
        (b, t, 2, h, w) are used instead of ``fnet``'s (a frozen flow's, precomputed: ``train.flows``)."""
        outs = list(self.iterate(lr.unbind(dim=1), flows=flows.unbind(dim=1) if flows is not None else None))
        return torch.stack([o[0] for o in outs], dim=1), torch.stack([o[1] for o in outs], dim=1)
