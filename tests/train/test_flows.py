"""train/flows.py: a frozen flow's flows computed once per clip are the flows the step would have computed, through
the windows' ping-pong, reversal, crops and flips; a run with ``flow_cache`` trains and counts their CPU time."""

import itertools
import json
import os
import shutil

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from model.frvsr import flow_warp
from testing.helpers import moving_clip
from train.config import TrainConfig
from train.data import TrainClips, crop_to_scale, discover_samples, pingpong_indices, read_clip
from train.flows import ClipFlows, FlowCache, clip_flows, files_digest, flip_flows, window_flows
from train.trainer import train


class GradientFlow(nn.Module):
    """A stand-in flow network that commutes with flips and transposes exactly (central differences of the
    frame difference, replicate-padded): the flow of a flipped pair is the flipped flow."""

    def forward(self, cur: torch.Tensor, prev: torch.Tensor) -> torch.Tensor:
        u = F.pad((cur - prev).mean(dim=1, keepdim=True), (1, 1, 1, 1), mode="replicate")
        gx = u[..., 1:-1, 2:] - u[..., 1:-1, :-2]
        gy = u[..., 2:, 1:-1] - u[..., :-2, 1:-1]
        return torch.cat((gx, gy), dim=1)


@pytest.fixture(autouse=True)
def runs(tmp_path, monkeypatch):
    monkeypatch.setenv("FRVSR_RUNS_DIR", str(tmp_path / "runs"))


def _flip(x: torch.Tensor, hflip: bool, vflip: bool, transpose: bool) -> torch.Tensor:
    if hflip:
        x = x.flip(-1)
    if vflip:
        x = x.flip(-2)
    return x.transpose(-1, -2) if transpose else x


@pytest.mark.parametrize("hflip,vflip,transpose", list(itertools.product([False, True], repeat=3)))
def test_flipped_flows_warp_the_flipped_frame_like_the_flipped_warp(hflip, vflip, transpose):
    gen = torch.Generator().manual_seed(0)
    prev = torch.rand(1, 3, 12, 20, generator=gen)
    flow = F.interpolate(torch.randn(1, 2, 3, 5, generator=gen) * 3, size=(12, 20), mode="bilinear")
    want = _flip(flow_warp(prev, flow), hflip, vflip, transpose)
    got = flow_warp(_flip(prev, hflip, vflip, transpose), flip_flows(flow, hflip, vflip, transpose))
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


def test_window_flows_follow_the_window_both_ways():
    fnet = GradientFlow()
    clip = moving_clip(5, 32, 64, dx=2, dy=1, seed=3)  # uint8 (5, 32, 64, 3): low-res 8x16, no padding
    flows = clip_flows(fnet, clip, "fp32")
    lr = torch.stack([torch.from_numpy(f).permute(2, 0, 1).float() / 255 for f in clip])
    lr = F.interpolate(lr, scale_factor=0.25, mode="bicubic", antialias=True).mul(255).round().div(255)
    for times in (pingpong_indices(5, 9, start=2), pingpong_indices(5, 7)[::-1]):
        got = window_flows(flows, times)
        assert got.shape == (len(times), 2, 8, 16) and not got[0].any()
        for k in range(1, len(times)):
            live = fnet(lr[times[k]][None], lr[times[k - 1]][None])[0]
            torch.testing.assert_close(got[k], live, atol=2e-2, rtol=1e-2)
    with pytest.raises(ValueError, match="neighbours"):
        window_flows(flows, [0, 2])


def test_training_windows_carry_the_flows_of_their_own_frames(seed_dataset):
    """Whatever crop, flips and direction a window drew, its flows are the flow network's on its own frames."""
    fnet = GradientFlow()
    samples = discover_samples(seed_dataset)  # 7 frames of 64x96
    clips = [crop_to_scale(read_clip(s)) for s in samples]
    flows = [clip_flows(fnet, c, "fp32") for c in clips]
    ds = TrainClips(samples, 10, 32, "bicubic", 8, clips, flows)
    torch.manual_seed(0)
    for idx in range(len(ds)):
        lr, hr, flow = ds[idx]
        assert flow.shape == (10, 2, 8, 8) and lr.shape == (10, 3, 8, 8)
        live = torch.cat([torch.zeros(1, 2, 8, 8), fnet(lr[1:], lr[:-1])])
        # the whole-frame flow at the crop: equal two low-res pixels in from the crop's border (the reach of the
        # bicubic x1/4 and of the differences: the crop's own low-res frames differ there), within two 8-bit levels
        assert live.abs().max() > 0.1  # real motion: a wrong sign or axis would be far off
        torch.testing.assert_close(flow[1:, :, 2:-2, 2:-2], live[1:, :, 2:-2, 2:-2], atol=0.02, rtol=0)


def test_the_cache_is_computed_once_and_keyed_by_the_flow_weights(seed_dataset):
    samples = discover_samples(seed_dataset)
    clips = [np.asarray(moving_clip(4, 32, 32, dx=1, dy=0, seed=i)) for i in range(len(samples))]
    fnet = nn.Conv2d(6, 2, 3, padding=1)
    cache = FlowCache(_Pair(fnet), "fp32")
    first, cpu = cache.load_or_compute([s.frames for s in samples], clips)
    again, cpu_again = FlowCache(_Pair(fnet), "fp32").load_or_compute([s.frames for s in samples], clips)
    assert cpu_again == cpu and all(torch.equal(a.fwd, b.fwd) for a, b in zip(first, again, strict=True))
    with torch.no_grad():
        fnet.bias.add_(1.0)
    changed, _ = FlowCache(_Pair(fnet), "fp32").load_or_compute([s.frames for s in samples], clips)
    assert not torch.equal(changed[0].fwd, first[0].fwd)
    assert isinstance(first[0], ClipFlows)


def test_the_cache_key_is_the_frames_content_not_their_paths_or_times(seed_dataset, tmp_path):
    """A dataset copied afresh (new paths, new modification times: ../shared re-provisioned) keeps its key, so
    the flows and the teacher's targets are not computed again; a frame with other bytes gets a new key."""
    frames = [s.frames for s in discover_samples(seed_dataset)]
    copy = tmp_path / "copy"
    shutil.copytree(seed_dataset, copy)
    for path in copy.rglob("*"):
        os.utime(path, ns=(1, 1))
    moved = [s.frames for s in discover_samples(copy)]
    assert moved[0][0] != frames[0][0]
    assert files_digest(moved, "k") == files_digest(frames, "k") != files_digest(frames, "other")
    moved[0][0].write_bytes(moved[0][0].read_bytes() + b"\0")
    assert files_digest(moved, "k") != files_digest(frames, "k")


class _Pair(nn.Module):
    def __init__(self, conv: nn.Module):
        super().__init__()
        self.conv = conv

    def forward(self, cur, prev):
        return self.conv(torch.cat((cur, prev), 1))


def test_a_run_with_the_flow_cache_trains_and_counts_the_flows_cpu_time(seed_dataset, tmp_path):
    settings = {
        "arch": "frvsr-spynet", "flow_lr_scale": 0.0, "flow_cache": True, "channels": 8, "blocks": 1, "hidden": 4,
        "crop_size": 32, "num_frames": 5, "epochs": 2, "crops_per_clip": 2, "batch_size": 2,
        "degradation": "bicubic", "workers": 0, "threads": 1,
    }  # fmt: skip
    trial = train(str(seed_dataset), TrainConfig.from_settings(settings), "cached")
    assert (tmp_path / "runs" / "flow_cache").is_dir() and len(list((tmp_path / "runs" / "flow_cache").iterdir())) == 1
    history = json.loads(open(trial["model_path"] + "/history.json").read())
    assert [h["step"] for h in history if "val_psnr" in h] == [3, 6]
    resume = torch.load(trial["model_path"] + "/resume.pt", weights_only=False)
    assert resume["run_state"]["cpu_seconds"] > 0
    with pytest.raises(ValueError, match="frozen flow"):
        TrainConfig.from_settings({**settings, "flow_lr_scale": 0.1})
