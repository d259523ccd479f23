"""The adversarial stage (train/gan.py, ``GanStage``): settings, ping-pong, the spatio-temporal
discriminator, checkpoint selection, and a short GAN fine-tune through client_train.py."""

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from model.checkpoint import load_checkpoint, save_checkpoint
from model.frvsr import FRVSR, FRVSRConfig
from model.inference import to_tensor
from testing.helpers import TRIAL_KEYS, client_test_argv, client_train_argv, moving_clip, random_frvsr
from train.config import TrainConfig
from train.gan import (
    D_IN_CHANNELS,
    DETAIL_GAIN,
    Discriminator,
    GanStage,
    discriminator_input,
    discriminator_path,
    load_discriminator,
    neighbour_flows,
    pingpong,
    pingpong_loss,
    pingpong_neighbour_flows,
    save_discriminator,
    vmaf_neg_loss,
)

TINY = {
    "crop_size": 32,
    "num_frames": 3,
    "epochs": 2,
    "crops_per_clip": 2,
    "batch_size": 2,
    "max_minutes": 2,
    "threads": 1,
}
GAN = {**TINY, "gan": True, "d_channels": 8, "lr": 5e-5}


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _window(seed=0, b=2, t=3, crop=32):
    hr = torch.stack([to_tensor(moving_clip(t, crop, crop, seed=seed + i)) for i in range(b)])  # (b, t, 3, H, W)
    lr = torch.nn.functional.avg_pool2d(hr.flatten(0, 1), 4).unflatten(0, (b, t))  # (b, t, 3, H/4, W/4)
    return lr, hr


def test_gan_settings_are_validated_and_unknown_keys_list_them():
    cfg = TrainConfig.from_settings(
        {
            "gan": True,
            "init_from": "x.pth",
            "gan_lr_d": 2e-4,
            "w_adv": 0.01,
            "w_fm": 0,
            "w_pingpong": 1,
            "d_channels": 16,
        }
    )
    assert cfg.gan and (cfg.gan_lr_d, cfg.w_adv, cfg.w_fm, cfg.w_pingpong, cfg.d_channels) == (2e-4, 0.01, 0.0, 1.0, 16)
    with pytest.raises(ValueError, match="valid keys") as e:
        TrainConfig.from_settings({"gan": True, "w_adversarial": 0.1})
    assert "w_adv" in str(e.value) and "gan_lr_d" in str(e.value)
    with pytest.raises(ValueError, match="must be bool"):
        TrainConfig.from_settings({"gan": "yes"})
    for bad in ({"gan_lr_d": 0.0}, {"w_pingpong": -1.0}, {"d_channels": 0}):
        with pytest.raises(ValueError):
            TrainConfig.from_settings(bad)


def test_pingpong_sequence_and_loss():
    x = torch.arange(4.0).view(1, 4, 1, 1, 1)
    assert pingpong(x).flatten().tolist() == [0, 1, 2, 3, 2, 1, 0]
    out = pingpong(torch.rand(2, 4, 3, 8, 8))  # the same output for a frame both ways: no drift
    assert pingpong_loss(out, 4).item() == 0
    out[:, 5] += 0.1  # x_2 differs on the way back
    assert pingpong_loss(out, 4).item() == pytest.approx(0.01 / 3)
    with pytest.raises(ValueError, match="expected 7 frames"):
        pingpong_loss(out[:, :6], 4)


def test_pingpong_loss_is_zero_only_for_a_model_that_ignores_the_past(tiny_cfg):
    torch.manual_seed(0)
    lr, _ = _window(t=4)
    model = random_frvsr(tiny_cfg)
    out, _ = model(pingpong(lr))
    assert pingpong_loss(out, 4).item() > 1e-8  # the recurrence carries the past: forward != backward
    with torch.no_grad():
        model.srnet.head.weight[:, 3:] = 0  # SRNet no longer sees the warped previous estimate
    out, _ = model(pingpong(lr))
    assert pingpong_loss(out, 4).item() == pytest.approx(0, abs=1e-12)


def test_discriminator_shapes_and_spectral_norm():
    disc = Discriminator(8)
    logits, feats = disc(torch.rand(5, D_IN_CHANNELS, 32, 48))
    assert logits.shape == (5, 1, 4, 6)
    assert [f.shape[1:] for f in feats] == [(8, 16, 24), (16, 8, 12), (32, 4, 6)]
    convs = [m for m in disc.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 4 and all(hasattr(m, "parametrizations") for m in convs)
    with pytest.raises(ValueError, match="discriminator_input"):
        disc(torch.rand(1, 3, 32, 32))  # a single frame is not a window


def test_discriminator_input_aligns_neighbours_with_the_middle_frame():
    """Each window = [previous warped to middle, middle, next warped to middle, upsampled low-res middle]."""
    b, t, dx, dy = 1, 4, 4, -4  # high-res pixels per frame: one low-res pixel
    hr = to_tensor(moving_clip(t, 64, 64, dx=dx, dy=dy)).unsqueeze(0)  # frame i+1 (p) == frame i (p + (dx, dy))
    lr = torch.rand(b, t, 3, 16, 16)
    flows = torch.empty(b, t - 2, 2, 2, 16, 16)
    flows[:, :, 0, 0], flows[:, :, 0, 1] = dx / 4, dy / 4  # previous frame: sample at p + motion
    flows[:, :, 1, 0], flows[:, :, 1, 1] = -dx / 4, -dy / 4  # next frame: sample at p - motion
    x = discriminator_input(hr, lr, flows)
    assert x.shape == (b * (t - 2), D_IN_CHANNELS, 64, 64)
    inner = (slice(None), slice(None), slice(8, -8), slice(8, -8))
    mid = x[:, 3:6][inner]
    assert torch.allclose(x[:, 0:3][inner], mid, atol=1e-5) and torch.allclose(x[:, 6:9][inner], mid, atol=1e-5)
    up = (x[:, 9:] + 1) / 2  # the condition: the upsampled low-res middle frame
    assert torch.allclose(x[:, 3:6] / DETAIL_GAIN + up, hr[0, 1:-1], atol=1e-5)  # the middle frame, as detail over it
    assert not torch.allclose(hr[0, :-2][inner], hr[0, 1:-1][inner], atol=1e-2)  # unwarped neighbours differ
    nf = neighbour_flows(
        FRVSR(FRVSRConfig(channels=8, blocks=1, fnet_channels=4)).fnet, torch.rand(2, 5, 3, 12, 20)
    )  # sides not multiples of 8
    assert nf.shape == (2, 3, 2, 2, 12, 20) and not nf.requires_grad


def test_the_generators_own_flows_give_the_discriminators_windows(tiny_cfg):
    torch.manual_seed(0)
    model = random_frvsr(tiny_cfg).eval()
    lr = pingpong(torch.rand(2, 4, 3, 16, 16))  # 7 frames
    with torch.no_grad():
        _, flows = model(lr)
    got, want = pingpong_neighbour_flows(flows), neighbour_flows(model.fnet, lr)
    assert got.shape == want.shape == (2, 5, 2, 2, 16, 16)
    assert torch.allclose(got, want, atol=1e-4) and want.abs().max() > 1e-3
    with pytest.raises(ValueError, match="ping-pong"):
        pingpong_neighbour_flows(flows[:, :6])


def test_vmaf_neg_loss_ranks_blur_below_the_truth_and_has_a_gradient():
    from vmaf_torch import VMAF

    torch.manual_seed(0)
    vmaf = VMAF(temporal_pooling=False, enable_motion=True, clip_score=False, NEG=True).eval()
    hr = to_tensor(moving_clip(3, 64, 64, dx=2, dy=1)).unsqueeze(0)  # (1, 3, 3, 64, 64)
    blurred = F.avg_pool2d(hr[0], 5, 1, 2, count_include_pad=False).unsqueeze(0).requires_grad_(True)
    same, worse = vmaf_neg_loss(vmaf, hr, hr), vmaf_neg_loss(vmaf, blurred, hr)
    assert same < 0.05 < worse  # the truth scores near 100, its blur well below
    worse.backward()
    assert torch.isfinite(blurred.grad).all() and blurred.grad.abs().sum() > 0


def test_gan_step_trains_both_networks(tiny_cfg):
    torch.manual_seed(0)
    cfg = TrainConfig.from_settings(GAN)
    model, disc = random_frvsr(tiny_cfg), Discriminator(8)
    opt_g, opt_d = torch.optim.Adam(model.parameters(), lr=1e-3), torch.optim.Adam(disc.parameters(), lr=1e-3)
    g0, d0 = [p.detach().clone() for p in model.parameters()], dict(disc.named_parameters())
    d0 = {k: p.detach().clone() for k, p in d0.items() if k != "head.bias"}  # (*)
    stats = GanStage(cfg, disc, opt_d).step(model, opt_g, *_window())
    assert {"loss", "psnr", "pixel", "flow", "pingpong", "adv", "fm", "d_loss", "d_real", "d_fake"} <= set(stats)
    assert all(math.isfinite(v) for v in stats.values()) and stats["pingpong"] > 0
    assert all(not torch.equal(a, p) for a, p in zip(g0, model.parameters(), strict=True) if p.numel() > 1)
    # (*) as many real as generated patches, all inside the hinge's margin at the start: the head's bias gets a
    # gradient of exactly zero (it moves both the same way); every other weight learns
    assert all(not torch.equal(d0[k], p) for k, p in disc.named_parameters() if k in d0)
    assert all(p.requires_grad for p in disc.parameters())  # unfrozen again for the next step
    assert "spectrum" not in stats
    spectral = TrainConfig.from_settings({**GAN, "w_spectrum": 0.1})
    stats = GanStage(spectral, disc, opt_d).step(model, opt_g, *_window())
    assert stats["spectrum"] > 0 and math.isfinite(stats["loss"])


def _stage(ref_psnr: float, kept_within: bool, **cfg) -> GanStage:
    disc = Discriminator(8)
    cfg = TrainConfig(gan=True, gan_psnr_drop=1.0, **cfg)
    return GanStage(cfg, disc, torch.optim.Adam(disc.parameters()), ref_psnr, kept_within)


def test_checkpoint_selection():
    assert _stage(30.2, False).keep({"PSNR": 25.0}, None)  # nothing kept yet: keep the first
    within = _stage(30.2, True)
    assert within.keep({"PSNR": 29.3}, {"PSNR": 30.0})  # later and within 1 dB of the start: kept
    assert not within.keep({"PSNR": 29.1}, {"PSNR": 29.3})  # too far below the start
    early = _stage(30.2, False)
    assert early.keep({"PSNR": 28.5}, {"PSNR": 28.0}) and not early.kept_within  # none within: the best PSNR so far
    assert not early.keep({"PSNR": 28.2}, {"PSNR": 28.5})
    assert early.keep({"PSNR": 29.5}, {"PSNR": 28.5}) and early.kept_within  # the first within budget
    assert not early.keep({"PSNR": 29.0}, {"PSNR": 29.5})  # from then on, only checkpoints within budget


def test_checkpoint_selection_by_a_score():
    best = _stage(30.2, False, gan_keep="VMAF_NEG")
    assert best.keep({"PSNR": 28.0, "VMAF_NEG": 60.0}, None)
    assert best.keep({"PSNR": 29.5, "VMAF_NEG": 50.0}, {"PSNR": 28.0, "VMAF_NEG": 60.0})  # the first within budget
    assert best.kept_within
    assert best.keep({"PSNR": 29.3, "VMAF_NEG": 52.0}, {"PSNR": 29.5, "VMAF_NEG": 50.0})  # a better score
    assert not best.keep({"PSNR": 29.9, "VMAF_NEG": 51.0}, {"PSNR": 29.3, "VMAF_NEG": 52.0})  # later, not better
    assert not best.keep({"PSNR": 29.1, "VMAF_NEG": 70.0}, {"PSNR": 29.3, "VMAF_NEG": 52.0})  # better, not within
    later = _stage(30.2, True, gan_keep="VMAF")  # resumed with gan_keep set: the kept one was scored before VMAF
    assert later.keep({"PSNR": 29.5, "VMAF": 40.0}, {"PSNR": 29.9})
    assert later.keep({"PSNR": 29.5, "VMAF": 40.0}, {"PSNR": 29.9, "VMAF": math.nan})
    with pytest.raises(ValueError, match="gan_keep must be one of"):
        TrainConfig(gan=True, gan_keep="PSNR")


def test_discriminator_file_and_resume(tmp_path):
    gen = tmp_path / "FRVSR_GAN_abc.pth"
    assert discriminator_path(gen) == tmp_path / "discriminator_abc.pth"
    assert discriminator_path(tmp_path / "mine.pth") == tmp_path / "discriminator_mine.pth"
    torch.manual_seed(1)
    disc = Discriminator(8)
    disc(torch.rand(1, D_IN_CHANNELS, 16, 16))  # moves the spectral-norm vectors
    save_discriminator(discriminator_path(gen), disc, step=3)
    for k, v in load_discriminator(discriminator_path(gen)).state_dict().items():
        assert torch.equal(v, disc.state_dict()[k])
    resumed = GanStage.build(TrainConfig(gan=True, init_from=str(gen), d_channels=16), "cpu").disc
    assert resumed.channels == 8  # the saved discriminator's architecture wins, like init_from's generator


def _run(args, runs, cwd):
    env = {**os.environ, "FRVSR_RUNS_DIR": str(runs), "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_gan_fine_tune_through_client_train_then_client_test(seed_dataset, tmp_path, tiny_cfg):
    init = tmp_path / "frvsr" / "FRVSR_GAN_base.pth"
    torch.manual_seed(0)
    save_checkpoint(init, FRVSR(tiny_cfg), train_settings={"degradation": "bicubic"})
    runs = tmp_path / "runs"
    settings = json.dumps({"advance_settings": {**GAN, "init_from": str(init)}})
    r = _run(
        [
            *client_train_argv(seed_dataset, "gan", settings),
        ],
        runs,
        tmp_path,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert "GAN stage starts from val PSNR" in r.stderr

    trial = json.loads((runs / "metric" / "trial.txt").read_text())
    assert set(trial) == TRIAL_KEYS and trial["gened_model_name"] == "FRVSR_GAN_gan"
    assert set(trial["eval_result"]["FRVSR_GAN"]["eval"]) == {"MSE", "SSIMs", "PSNR", "SSIM"}
    assert trial["model_params"]["gan"] is True and trial["model_params"]["model_args"]["channels"] == 8
    assert trial["model_params"]["channels"] == 8  # the flat keys say the same network
    model_dir = Path(trial["model_path"])
    model, ckpt = load_checkpoint(model_dir / "FRVSR_GAN_gan.pth")  # the generator alone, a plain FRVSR checkpoint
    assert model.cfg == tiny_cfg and set(ckpt["model"]) == set(FRVSR(tiny_cfg).state_dict())  # no discriminator inside
    assert isinstance(load_discriminator(model_dir / "discriminator_gan.pth"), Discriminator)
    history = json.loads((model_dir / "history.json").read_text())
    assert history[0]["step"] == 0 and all("val_tof" in h for h in history if "val_psnr" in h)
    written = json.loads((model_dir / "settings.json").read_text())  # init_from's network, not the default's
    assert (
        (written["channels"], written["blocks"], written["hidden"])
        == (8, 1, 4)
        == (written["model_args"]["channels"], written["model_args"]["blocks"], written["model_args"]["hidden"])
    )

    r = _run(
        [
            *client_test_argv(seed_dataset, model_dir, "FRVSR_GAN_gan.pth"),
        ],
        runs,
        tmp_path,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    test = json.loads((runs / "metric" / "trial.txt").read_text())
    assert all(
        set(v["test"]) == {"MSE", "SSIMs", "PSNR", "SSIM"} for v in test["test_result"].values()
    )  # contract unchanged
    from openpyxl import load_workbook

    wb = load_workbook(Path(test["model_path"]) / test["predict_result_filename"])
    head, *rows = list(wb["per_sample"].values)
    for col in ("tOF", "bicubic tOF"):
        assert all(isinstance(r[head.index(col)], float) and r[head.index(col)] >= 0 for r in rows)
    summary = [r for r in wb["summary"].values if r and r[0] in ("FRVSR_GAN", "Bicubic")]
    assert len(summary) == 2 and all(r[6] >= 0 for r in summary)


@pytest.mark.slow
def test_gan_under_torchrun_two_processes(seed_dataset, tmp_path, tiny_cfg):
    init = tmp_path / "FRVSR_GAN_base.pth"
    save_checkpoint(init, FRVSR(tiny_cfg))
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    runs = tmp_path / "runs"
    settings = json.dumps({"advance_settings": {**GAN, "epochs": 1, "init_from": str(init)}})
    r = subprocess.run(
        [
            torchrun,
            "--standalone",
            "--nproc_per_node=2",
            *client_train_argv(seed_dataset, "ddp", settings),
        ],
        cwd=tmp_path,
        env={**os.environ, "FRVSR_RUNS_DIR": str(runs)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    model_dir = Path(json.loads((runs / "metric" / "trial.txt").read_text())["model_path"])
    assert json.loads((model_dir / "settings.json").read_text())["world_size"] == 2
    assert {"FRVSR_GAN_ddp.pth", "discriminator_ddp.pth"} <= {p.name for p in model_dir.iterdir()}
