"""BasicVSR (Chan et al., CVPR 2021) for 4x video super-resolution, the network alone: feature warp, config,
propagation trunk, model. The released weights and the ``basicvsr`` checkpoint: ``model.teacher``.

The structure is the one the authors' released state dicts imply (``spynet.*``, ``backward_trunk.main.*``,
``forward_trunk.main.*``, ``fusion``, ``upconv1``, ``upconv2``, ``conv_hr``, ``conv_last``): they load strictly.
Conventions are ``model.frvsr``'s (float RGB in [0, 1], NCHW; backward flow in pixels, ``flow_warp``).

Bidirectional: every output frame depends on the whole clip, so ``iterate`` reads the clip before it yields
anything (it cannot stream). It holds the low-res clip (3 float32 per pixel per frame) and one feature map per
frame from the backward branch (``num_feat`` = 64 values per pixel, float32, or bfloat16 under bf16 autocast),
each freed as its frame is yielded: 268 bytes per low-res pixel per frame in float32 (6.8 MB per 176x144
frame; 3.2 GB for 300 frames of 40,000 px), 140 under bf16 autocast. Flows are computed pair by pair when
needed, never stored. Measured cost: ``model.teacher``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, fields

import torch
import torch.nn as nn
import torch.nn.functional as F

from model.frvsr import SCALE, ResBlock, depth_to_space, flow_warp
from model.spynet import SPyNet

# ----------------------------------------------------------------------------- helpers


def warp_features(feat: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """``flow_warp`` with zeros outside the image, as BasicVSR warps its features (SPyNet warps images with
    border values): (n, c, h, w), (n, 2, h, w) -> (n, c, h, w).

    A one-pixel ring of zeros around ``feat``, warped with border sampling and cropped off again, equals
    ``grid_sample(padding_mode='zeros')`` exactly: beyond the image the bilinear taps read the ring.
    """
    padded = F.pad(feat, (1, 1, 1, 1))  # (n, c, h+2, w+2)
    flow = F.pad(flow, (1, 1, 1, 1), mode="replicate")  # (n, 2, h+2, w+2); its ring is cropped off unused
    return flow_warp(padded, flow)[..., 1:-1, 1:-1]


def _cut(x: torch.Tensor, keep: torch.Tensor | None) -> torch.Tensor:
    """``x`` zeroed for the samples where ``keep`` (n, 1, 1, 1) is False (a scene cut); ``x`` itself if None."""
    return x if keep is None else x * keep.to(x.dtype)


# ----------------------------------------------------------------------------- configuration


@dataclass
class BasicVSRConfig:
    """Architecture hyper-parameters (the released weights': 64 and 30); stored in every checkpoint."""

    num_feat: int = 64  # width of the propagated features and of the reconstruction
    num_block: int = 30  # residual blocks per propagation branch (backward and forward)

    def __post_init__(self) -> None:
        if self.num_feat < 1 or self.num_block < 0:
            raise ValueError(f"num_feat must be >= 1 and num_block >= 0, got {self}")

    @classmethod
    def from_dict(cls, d: dict) -> BasicVSRConfig:
        """From a checkpoint's ``model_args``; unknown keys are an error listing the valid ones."""
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown model settings {sorted(unknown)}; valid: {sorted(known)}")
        return cls(**d)


# ----------------------------------------------------------------------------- networks


class Trunk(nn.Module):
    """One propagation branch: [lr, warped features] (n, 3 + c, h, w) -> features (n, c, h, w)."""

    def __init__(self, c: int, blocks: int):
        super().__init__()
        # the released keys: main.0 the conv, main.2.{i} the residual blocks (conv1, conv2, no BN)
        self.main = nn.Sequential(
            nn.Conv2d(3 + c, c, 3, padding=1),
            nn.LeakyReLU(0.1, inplace=True),
            nn.Sequential(*[ResBlock(c) for _ in range(blocks)]),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x.to(self.main[0].weight.dtype))  # float32 frame + features: in the weights' type


class BasicVSR(nn.Module):
    """Bidirectional recurrent SR: SPyNet flow, a backward and a forward feature branch, a 4x reconstruction.
    No state lives on the module."""

    INT8 = {"backward_trunk": (), "forward_trunk": ()}  # int8 (model.quantize): the trunks, ~3/4 of its convolutions

    def __init__(self, cfg: BasicVSRConfig | None = None):
        super().__init__()
        self.cfg = cfg or BasicVSRConfig()
        c = self.cfg.num_feat
        self.spynet = SPyNet()
        self.backward_trunk = Trunk(c, self.cfg.num_block)
        self.forward_trunk = Trunk(c, self.cfg.num_block)
        self.fusion = nn.Conv2d(2 * c, c, 1)
        self.upconv1 = nn.Conv2d(c, 4 * c, 3, padding=1)
        self.upconv2 = nn.Conv2d(c, 4 * 64, 3, padding=1)  # the released reconstruction is 64 wide after fusion
        self.conv_hr = nn.Conv2d(64, 64, 3, padding=1)
        self.conv_last = nn.Conv2d(64, 3, 3, padding=1)
        self.lrelu = nn.LeakyReLU(0.1, inplace=True)

    @property
    def fnet(self) -> SPyNet:
        """The flow network under the name the contract uses (``model.fnet(cur, prev)``, ``train/gan.py``)."""
        return self.spynet

    def reconstruct(self, lr: torch.Tensor, back: torch.Tensor, fwd: torch.Tensor) -> torch.Tensor:
        """Both branches' features (n, c, h, w) and the frame (n, 3, h, w) -> hr (n, 3, 4h, 4w) float32."""
        x = self.lrelu(self.fusion(torch.cat((back, fwd), dim=1).to(self.fusion.weight.dtype)))  # (n, c, h, w)
        x = self.lrelu(depth_to_space(self.upconv1(x), 2))  # (n, c, 2h, 2w)
        x = self.lrelu(depth_to_space(self.upconv2(x), 2))  # (n, 64, 4h, 4w)
        x = self.conv_last(self.lrelu(self.conv_hr(x)))  # (n, 3, 4h, 4w)
        with torch.autocast(lr.device.type, enabled=False):  # the residual carries the picture: float32
            base = F.interpolate(lr.float(), scale_factor=SCALE, mode="bilinear", align_corners=False)
        return x.float() + base  # the authors' residual base is bilinear (FRVSR's is bicubic)

    def iterate(
        self, frames: Iterable[torch.Tensor], cut_threshold: float | None = None, flow_ahead: int = 0
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Both propagations over a clip: yields ``(hr, flow)`` per input frame, in order.

        Reads every frame before the first yield (see the module docstring for the memory this holds).

        Args:
            frames: iterable of (n, 3, h, w) low-res frames in [0, 1]; any h, w.
            cut_threshold: a sample whose mean absolute difference to its previous frame exceeds this is a
                scene cut: neither branch carries features across it. None never cuts (the authors' model).
            flow_ahead: unused (``FRVSR.iterate``'s; here every flow is computed where it is needed).
        Yields:
            hr: (n, 3, 4h, 4w) float32; flow: (n, 2, h, w), the flow that warped frame i-1's forward
            features onto frame i (zeros for the first frame and across a cut).
        """
        clip = list(frames)
        if not clip:
            return
        n, _, h, w = clip[0].shape
        keep = [None] + [self._keep(a, b, cut_threshold) for a, b in zip(clip[:-1], clip[1:], strict=True)]

        back: list[torch.Tensor | None] = [None] * len(clip)  # the backward branch's features, one map per frame
        feat = clip[0].new_zeros(n, self.cfg.num_feat, h, w)  # the recurrent state lives here, never on the module
        for i in reversed(range(len(clip))):
            if i < len(clip) - 1:
                flow = self.spynet(clip[i], clip[i + 1])  # (n, 2, h, w): warps frame i+1 onto frame i
                feat = _cut(warp_features(feat, flow), keep[i + 1])
            feat = self.backward_trunk(torch.cat((clip[i], feat), dim=1))  # (n, c, h, w)
            back[i] = feat

        feat = torch.zeros_like(feat)
        for i, lr in enumerate(clip):
            flow = lr.new_zeros(n, 2, h, w, dtype=torch.float32)
            if i:
                flow = _cut(self.spynet(lr, clip[i - 1]), keep[i])  # (n, 2, h, w): warps frame i-1 onto frame i
                feat = _cut(warp_features(feat, flow), keep[i])
            feat = self.forward_trunk(torch.cat((lr, feat), dim=1))  # (n, c, h, w)
            hr = self.reconstruct(lr, back[i], feat)
            back[i] = None  # the memory held shrinks as frames are yielded
            yield hr, flow

    @staticmethod
    def _keep(prev: torch.Tensor, cur: torch.Tensor, cut_threshold: float | None) -> torch.Tensor | None:
        """(n, 1, 1, 1) bool, False for a sample whose step ``prev`` -> ``cur`` is a scene cut; None: no checks."""
        if cut_threshold is None:
            return None
        return ((cur - prev).abs().mean(dim=(1, 2, 3)) <= cut_threshold).view(-1, 1, 1, 1)

    def forward(self, lr: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Training entry: (b, t, 3, h, w) -> hr (b, t, 3, 4h, 4w) and flows (b, t, 2, h, w)."""
        outs = list(self.iterate(lr.unbind(dim=1)))
        return torch.stack([o[0] for o in outs], dim=1), torch.stack([o[1] for o in outs], dim=1)
