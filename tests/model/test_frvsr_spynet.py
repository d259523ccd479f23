"""model/frvsr_spynet.py: FRVSR with BasicVSR's pretrained SPyNet as its flow, and training it."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from model.checkpoint import load_checkpoint, save_checkpoint
from model.commands import main
from model.frvsr import FRVSR, FRVSRConfig, flow_warp
from model.frvsr_spynet import FRVSRSpyNet, FRVSRSpyNetConfig, ScaledSPyNet, from_frvsr
from model.inference import super_resolve, to_tensor
from testing.clips import moving_clip
from testing.helpers import ROOT, random_frvsr
from train.config import TrainConfig
from train.data import degrade
from train.trainer import build_optimizer, train_step

TINY = {"channels": 8, "blocks": 1, "hidden": 4}


def _pair(shift=(3, -2), h=72, w=88):
    clip = moving_clip(2, h, w, dx=shift[0], dy=shift[1], seed=5)  # frame 1 (p) == frame 0 (p + shift)
    return to_tensor(clip[1:2]), to_tensor(clip[0:1])  # cur, prev (1, 3, h, w)


@pytest.mark.parametrize("scale", [1.0, 0.625])
def test_scaled_spynet_recovers_a_known_motion_in_our_convention(scale):
    flow_net = FRVSRSpyNet(FRVSRSpyNetConfig(**TINY, flow_scale=scale))
    flow_net.load_released_flow()
    cur, prev = _pair()
    with torch.no_grad():
        flow = flow_net.fnet(cur, prev)  # (1, 2, h, w)
    inner = flow[0, :, 8:-8, 8:-8].mean(dim=(1, 2))
    assert torch.allclose(inner, torch.tensor([3.0, -2.0]), atol=0.35), inner
    err = (flow_warp(prev, flow) - cur)[..., 8:-8, 8:-8].abs().mean()
    assert err < 0.5 * (prev - cur)[..., 8:-8, 8:-8].abs().mean()


def test_scale_one_is_spynet_itself():
    a = ScaledSPyNet(1.0)
    cur, prev = _pair()
    with torch.no_grad():
        assert torch.equal(a(cur, prev), a.spynet(cur, prev))


def test_conversion_keeps_the_reconstruction_and_round_trips_as_a_checkpoint(tmp_path):
    frvsr = random_frvsr(FRVSRConfig(**TINY, fnet_channels=4))
    model = from_frvsr(frvsr, 0.625)
    for k, v in frvsr.state_dict().items():
        if not k.startswith("fnet."):
            assert torch.equal(model.state_dict()[k], v), k
    save_checkpoint(tmp_path / "f.pth", frvsr, cpu_seconds=12.5)
    assert main(["from-frvsr", str(tmp_path / "f.pth"), str(tmp_path / "s.pth")]) == 0
    loaded, ckpt = load_checkpoint(tmp_path / "s.pth")
    assert ckpt["arch"] == "frvsr-spynet" and ckpt["cpu_seconds"] == 12.5 and loaded.cfg.flow_scale == 0.625
    clip = moving_clip(3, 24, 32)
    with torch.no_grad():
        a = np.stack(list(super_resolve(loaded, clip, precision="fp32")))
        b = np.stack(list(super_resolve(model.eval(), clip, precision="fp32")))
    assert a.shape == (3, 96, 128, 3) and np.array_equal(a, b)
    assert main(["from-frvsr", str(tmp_path / "s.pth"), str(tmp_path / "t.pth")]) == 2  # not an FRVSR


def test_grow_writes_a_bigger_model_with_the_same_output_and_its_training_time(tmp_path):
    model = from_frvsr(random_frvsr(FRVSRConfig(**TINY, fnet_channels=4)), 0.625)
    save_checkpoint(tmp_path / "s.pth", model, cpu_seconds=7.0)
    assert main(["grow", str(tmp_path / "s.pth"), str(tmp_path / "g.pth"), "--set", "block=rep", "backward=4"]) == 0
    grown, ckpt = load_checkpoint(tmp_path / "g.pth")
    assert (grown.cfg.block, grown.cfg.backward, ckpt["cpu_seconds"]) == ("rep", 4, 7.0)
    clip = moving_clip(3, 24, 32)
    a = np.stack(list(super_resolve(grown, clip, precision="fp32")))
    b = np.stack(list(super_resolve(model.eval(), clip, precision="fp32")))
    assert np.abs(a.astype(int) - b).max() <= 1  # the same outputs, to a rounding of the 8-bit frames
    assert main(["grow", str(tmp_path / "s.pth"), str(tmp_path / "h.pth"), "--set", "channels=64"]) == 2
    assert main(["grow", str(tmp_path / "s.pth"), str(tmp_path / "h.pth"), "--set", "rep"]) == 2


def test_a_frozen_flow_gets_no_gradient_and_does_not_move():
    cfg = TrainConfig.from_settings({"arch": "frvsr-spynet", "flow_lr_scale": 0.0, **TINY, "flow_scale": 0.625})
    assert isinstance(cfg.model, FRVSRSpyNetConfig) and cfg.settings()["flow_scale"] == 0.625
    model = FRVSRSpyNet(cfg.model).train()
    opt = build_optimizer(model, cfg)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    hr = to_tensor(moving_clip(3, 64, 64))[None]  # (1, 3, 3, 64, 64)
    lr = degrade(hr[0], "bicubic")[None]
    train_step(model, opt, lr, hr, cfg)
    after = model.state_dict()
    assert all(torch.equal(after[k], v) for k, v in before.items() if k.startswith("fnet."))
    assert any(not torch.equal(after[k], v) for k, v in before.items() if k.startswith("srnet."))
    assert all(p.grad is None for p in model.fnet.parameters())


def test_flow_lr_scale_gives_the_flow_its_own_rate_and_one_keeps_a_single_group():
    one = TrainConfig.from_settings({"arch": "frvsr-spynet", **TINY})
    assert len(build_optimizer(FRVSRSpyNet(one.model), one).param_groups) == 1  # as older runs' resume.pt
    cfg = TrainConfig.from_settings({"arch": "frvsr-spynet", "flow_lr_scale": 0.125, **TINY})
    groups = build_optimizer(FRVSRSpyNet(cfg.model), cfg).param_groups
    assert [g["lr_scale"] for g in groups] == [1.0, 0.125]
    with pytest.raises(ValueError, match="arch must be one of.*frvsr"):
        TrainConfig.from_settings({"arch": "basicvsr"})
    with pytest.raises(ValueError, match="unknown advance_settings.*flow_scale"):
        TrainConfig.from_settings({"flow_scale": 0.5})  # plain FRVSR has no such field
    assert FRVSR(FRVSRConfig(**TINY)).cfg.hidden == 4


@pytest.mark.slow
def test_the_conversion_cli_runs_as_a_module(tmp_path):
    """``python -m model.commands from-frvsr``: run as __main__, the classes it writes must be the ones in ARCHS."""
    save_checkpoint(tmp_path / "f.pth", random_frvsr(FRVSRConfig(**TINY, fnet_channels=4)))
    cmd = [sys.executable, "-m", "model.commands", "from-frvsr", str(tmp_path / "f.pth"), str(tmp_path / "s.pth")]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip().splitlines()[-1] == str(tmp_path / "s.pth"), r.stderr
    assert load_checkpoint(tmp_path / "s.pth")[1]["arch"] == "frvsr-spynet"
