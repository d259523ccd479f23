"""FRVSR whose flow is SPyNet (BasicVSR's, pretrained; ``model.spynet``) instead of FNet: the same recurrence
(``model.frvsr.FRVSR``: flow, warp the previous estimate and the feature state, reconstruct), with flow that
really aligns (warp PSNR: ``bench/warp_psnr.py``).

SPyNet runs on the low-res pair scaled by ``flow_scale`` (antialiased bilinear), its flow upsampled back and
rescaled to low-res pixels. SPyNet resizes its input to multiples of 32, so its cost steps with the scaled
size: 0.625 (the default) kept 96 % of full resolution's warp-PSNR gain over no motion on both shared test
lists at about half its cost; 0.5 kept 89 %. It is trained frozen or at a reduced learning rate
(``train.config.TrainConfig.flow_lr_scale``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from model.frvsr import FRVSR, FRVSRConfig
from model.spynet import SPyNet, load_spynet


@dataclass
class FRVSRSpyNetConfig(FRVSRConfig):
    """FRVSR's fields (``fnet_channels`` and ``max_flow`` are unused: SPyNet has its own size and no bound)
    and the scale SPyNet sees the low-res pair at."""

    flow_scale: float = 0.625  # 176x144 -> 110x90, SPyNet at 128x96: 96 % of full-res alignment (bench/warp_psnr.py)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 < self.flow_scale <= 1:
            raise ValueError(f"flow_scale must be in (0, 1], got {self.flow_scale}")


class ScaledSPyNet(nn.Module):
    """(n, 3, h, w) x2 -> (n, 2, h, w) backward flow in pixels (``flow_warp(prev, flow) ~= cur``), computed by
    SPyNet on the pair scaled by ``scale``."""

    def __init__(self, scale: float):
        super().__init__()
        self.scale = scale
        self.spynet = SPyNet()

    def forward(self, cur: torch.Tensor, prev: torch.Tensor) -> torch.Tensor:
        if self.scale == 1:
            return self.spynet(cur, prev)
        h, w = cur.shape[-2:]
        size = (max(1, round(h * self.scale)), max(1, round(w * self.scale)))
        small = [F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False) for x in (cur, prev)]
        flow = self.spynet(*small)  # (n, 2, h*s, w*s) in scaled pixels
        flow = F.interpolate(flow.float(), size=(h, w), mode="bilinear", align_corners=False)
        return flow * torch.tensor([w / size[1], h / size[0]], device=flow.device).view(1, 2, 1, 1)


class FRVSRSpyNet(FRVSR):
    """FRVSR with ``ScaledSPyNet`` as its ``fnet``; a fresh one has random SPyNet weights until
    ``load_released_flow`` (training does it for a new run)."""

    def __init__(self, cfg: FRVSRSpyNetConfig | None = None):
        cfg = cfg or FRVSRSpyNetConfig()
        super().__init__(cfg)
        self.fnet = ScaledSPyNet(cfg.flow_scale)

    def load_released_flow(self, weights: str = "BasicVSR_Vimeo90K_BIx4.pth") -> None:
        """Put BasicVSR's released SPyNet (``model.spynet.load_spynet``) in as the flow."""
        self.fnet.spynet.load_state_dict(load_spynet(weights).state_dict())


def from_frvsr(frvsr: FRVSR, flow_scale: float = FRVSRSpyNetConfig.flow_scale) -> FRVSRSpyNet:
    """A trained FRVSR's reconstruction (SRNet, its feature state) with BasicVSR's released SPyNet as the flow."""
    model = FRVSRSpyNet(FRVSRSpyNetConfig(**{**asdict(frvsr.cfg), "flow_scale": flow_scale}))
    state = {k: v for k, v in frvsr.state_dict().items() if not k.startswith("fnet.")}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or not all(k.startswith("fnet.") for k in missing):
        raise ValueError(f"cannot carry the FRVSR's weights over: missing {missing}, unexpected {unexpected}")
    model.load_released_flow()
    return model

