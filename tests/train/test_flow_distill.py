"""train/flow_distill.py on tiny synthetic clips: the step learns, the run writes a usable checkpoint, warp PSNR
gets its edge cases right. The teacher is a brute-force global-shift search, so the wheel is not needed."""

import math
import random

import cv2
import numpy as np
import pytest
import torch

from model.checkpoint import load_checkpoint, save_checkpoint
from model.frvsr import FRVSR, FNet, FRVSRConfig, flow_warp
from train.flow_distill import (
    CHECKPOINT_NAME,
    RESUME_NAME,
    DistillConfig,
    PairBatch,
    _augment,
    clip_warp_psnr,
    distill,
    distill_loss,
    distill_step,
    evaluate,
    init_fnet,
    synthetic_batch,
    warp_psnr,
    zero_flow,
)

TINY = FRVSRConfig(channels=8, blocks=1, fnet_channels=4, hidden=4)
SHIFT = (1, -1)  # low-res pixels per frame (x, y) of the synthetic clips


def texture(h: int, w: int, seed: int) -> np.ndarray:
    """Smooth random uint8 (h, w, 3): blurred noise, so a sub-pixel warp is well defined."""
    rng = np.random.default_rng(seed)
    noise = rng.random((h, w, 3)).astype(np.float32)
    return (cv2.GaussianBlur(noise, (0, 0), 3.0) * 255 * 3 - 255).clip(0, 255).astype(np.uint8)


def moving(frames: int, h: int, w: int, seed: int, scale: int = 4) -> np.ndarray:
    """uint8 (frames, h, w, 3): a crop of a larger texture moving SHIFT low-res pixels (x scale) per frame."""
    m = frames * scale * 2
    big = texture(h + 2 * m, w + 2 * m, seed)
    dx, dy = SHIFT[0] * scale, SHIFT[1] * scale
    return np.stack([big[m - i * dy : m - i * dy + h, m - i * dx : m - i * dx + w] for i in range(frames)])


def shift_teacher(cur: torch.Tensor, prev: torch.Tensor) -> torch.Tensor:
    """The integer global translation (per sample, within +-2 px) that best warps ``prev`` onto ``cur``."""
    out = cur.new_zeros(cur.shape[0], 2, *cur.shape[-2:])
    for n in range(cur.shape[0]):
        best = None
        for fx in range(-2, 3):
            for fy in range(-2, 3):
                flow = torch.tensor([fx, fy], dtype=torch.float32).view(1, 2, 1, 1).expand(1, 2, *cur.shape[-2:])
                err = (flow_warp(prev[n : n + 1], flow) - cur[n : n + 1])[..., 3:-3, 3:-3].abs().mean().item()
                if best is None or err < best[0]:
                    best = (err, flow)
        out[n] = best[1][0]
    return out


def write_dataset(root, clips: int = 3, frames: int = 7, size: int = 96):
    """A Vimeo-style folder: ``clips`` moving clips, the last one the test list."""
    names = []
    for i in range(clips):
        folder = root / "sequences" / "00001" / f"{i + 1:04d}"
        folder.mkdir(parents=True)
        for t, f in enumerate(moving(frames, size, size, seed=i)):
            cv2.imwrite(str(folder / f"im{t + 1}.png"), cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
        names.append(f"00001/{i + 1:04d}")
    (root / "sep_trainlist.txt").write_text("\n".join(names[:-1]) + "\n")
    (root / "sep_testlist.txt").write_text(names[-1] + "\n")
    return root


def tensor(frames: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255.0


# ----------------------------------------------------------------------------- warp PSNR


def test_identical_frames_with_zero_flow_are_infinite():
    x = torch.rand(2, 3, 20, 24)
    assert warp_psnr(x, x, zero_flow(x, x)) == [math.inf, math.inf]


def test_a_known_shift_is_undone_by_its_flow_and_not_by_others():
    clip = tensor(moving(2, 32, 40, seed=0, scale=1))  # SHIFT pixels between the frames, no scaling
    prev, cur = clip[:1], clip[1:]
    right = torch.tensor([-SHIFT[0], -SHIFT[1]], dtype=torch.float32).view(1, 2, 1, 1).expand(1, 2, 32, 40)
    exact, still, wrong = warp_psnr(prev, cur, right)[0], warp_psnr(prev, cur, zero_flow(cur, prev))[0], None
    wrong = warp_psnr(prev, cur, -right)[0]
    assert exact > 100  # float rounding only: the 4-pixel border removes the clamped edge
    assert still < exact - 50 and wrong < still


def test_warp_psnr_leaves_the_border_out():
    prev = torch.rand(1, 3, 16, 16)
    cur = prev.clone()
    cur[..., :4, :] = 0  # a difference only inside the 4-pixel border
    assert warp_psnr(prev, cur, zero_flow(cur, prev)) == [math.inf]
    assert warp_psnr(prev, cur, zero_flow(cur, prev), border=3)[0] < 100
    with pytest.raises(ValueError):
        warp_psnr(prev[..., :8, :8], cur[..., :8, :8], zero_flow(cur, prev)[..., :8, :8])


def test_evaluate_means_the_pairs_of_every_list():
    clip = moving(4, 24, 24, seed=1, scale=1)
    per_pair = clip_warp_psnr(zero_flow, clip)
    assert len(per_pair) == 3 and all(math.isfinite(p) for p in per_pair)
    still = np.repeat(clip[:1], 3, axis=0)
    scores = evaluate(zero_flow, {"a": [("c", clip)], "b": [("s", still)]})
    assert scores["a"] == pytest.approx(np.mean(per_pair)) and scores["b"] == math.inf


# ----------------------------------------------------------------------------- pairs and step


def test_augmentation_moves_the_flow_with_the_image():
    clip = moving(2, 32, 32, seed=2, scale=1)
    prev, cur = clip[0], clip[1]
    flow = np.zeros((2, 32, 32), np.float32)
    flow[0], flow[1] = -SHIFT[0], -SHIFT[1]
    for seed in range(8):  # every combination of the three coin flips shows up
        (c, p), f = _augment([cur, prev], flow, random.Random(seed))
        c, p = tensor(np.ascontiguousarray(c)[None]), tensor(np.ascontiguousarray(p)[None])
        assert warp_psnr(p, c, torch.from_numpy(np.ascontiguousarray(f))[None])[0] > 100


def test_synthetic_pairs_move_by_their_flow():
    clip = tensor(moving(2, 40, 40, seed=4, scale=1))
    batch = synthetic_batch(PairBatch(clip, clip, None, clip, clip), 4.0, torch.Generator().manual_seed(0))
    assert batch.flow.shape == (2, 2, 40, 40) and batch.flow.abs().max() <= 4.0 + 0.03 * 20 * 2
    assert batch.flow.flatten(2).std(dim=2).max() > 0  # not only a shift: the zoom/rotation varies it
    exact = warp_psnr(batch.prev, batch.cur, batch.flow)
    still = warp_psnr(batch.prev, batch.cur, zero_flow(batch.cur, batch.prev))
    assert min(exact) > 45 and max(still) < min(exact) - 10  # 8-bit rounding only
    assert torch.equal(batch.clean_cur, batch.cur)  # the same field moves the clean frames


def test_a_fresh_fnet_predicts_zero_flow_and_keeps_its_signal():
    torch.manual_seed(0)
    default, fnet = FNet(8, 24.0), FNet(8, 24.0)
    init_fnet(fnet)
    x = torch.rand(1, 6, 32, 32)
    assert torch.equal(fnet(x[:, :3], x[:, 3:]), torch.zeros(1, 2, 32, 32))
    with torch.no_grad():  # the last layer's input: PyTorch's default init loses most of the signal on the way
        assert fnet.body[:-1](x).std() > 3 * default.body[:-1](x).std()


def fixed_batch() -> PairBatch:
    clip = tensor(moving(3, 32, 32, seed=3, scale=1))
    cur, prev = clip[1:], clip[:-1]  # (2, 3, 32, 32)
    flow = shift_teacher(cur, prev)
    return PairBatch(cur, prev, flow, cur, prev)


def test_one_distill_step_reduces_the_flow_loss():
    torch.manual_seed(0)
    fnet = FNet(4, 24.0)
    cfg = DistillConfig(out="unused", precision="fp32", lr=1e-3)
    batch = fixed_batch()
    before = distill_loss(fnet, batch, cfg)[0].item()
    opt = torch.optim.Adam(fnet.parameters(), lr=cfg.lr)
    stats = distill_step(fnet, opt, batch, cfg)
    after = distill_loss(fnet, batch, cfg)[0].item()
    assert stats["loss"] == pytest.approx(before, rel=1e-4)
    assert after < before


def test_the_photometric_term_is_added_when_weighted():
    fnet = FNet(4, 24.0)
    batch = fixed_batch()
    plain = distill_loss(fnet, batch, DistillConfig(out="x", precision="fp32"))[1]
    photo = distill_loss(fnet, batch, DistillConfig(out="x", precision="fp32", photo_weight=0.5))[1]
    assert "photo" not in plain and photo["photo"] > 0
    assert photo["loss"] == pytest.approx(plain["loss"] + 0.5 * photo["photo"], rel=1e-4)


# ----------------------------------------------------------------------------- the run


@pytest.fixture
def init_ckpt(tmp_path):
    torch.manual_seed(1)
    model = FRVSR(TINY)
    for p in model.parameters():  # every layer random: "SRNet equals init's" must not hold by zero-init alone
        torch.nn.init.normal_(p, std=0.05)
    path = tmp_path / "init.pth"
    save_checkpoint(path, model)
    return path


def run_cfg(tmp_path, init_ckpt, **kw) -> DistillConfig:
    if not (tmp_path / "data").exists():
        write_dataset(tmp_path / "data")
    settings = {
        "out": str(tmp_path / "out"),
        "minutes": 0.0,
        "max_steps": 3,
        "init": str(init_ckpt),
        "datasets": [str(tmp_path / "data")],
        "versions": 1,
        "crops": [16],
        "batch_size": 2,
        "eval_every_minutes": 0.0,
        "synthetic_steps": 1,  # one synthetic warm-up step, then real and synthetic batches
        "log_every": 1,
        "precision": "fp32",
        "teacher_precision": "fp32",
        **kw,
    }
    return DistillConfig(**settings)


@pytest.mark.parametrize("channels", [4, 8])  # init's width (FNet continues from init's) and a new one (fresh)
def test_distill_writes_a_checkpoint_with_init_srnet_and_a_new_fnet(tmp_path, init_ckpt, channels):
    cfg = run_cfg(tmp_path, init_ckpt, fnet_channels=channels, keep_init_fnet=True)
    record = distill(cfg, teacher=shift_teacher, cache_dir=tmp_path / "cache")
    model, ck = load_checkpoint(tmp_path / "out" / CHECKPOINT_NAME, channels_last=False)
    init, _ = load_checkpoint(init_ckpt, channels_last=False)
    assert model.cfg.fnet_channels == channels and ck["step"] == 3 == record["step"]
    assert {k: v.shape for k, v in model.srnet.state_dict().items()} == {
        k: v.shape for k, v in init.srnet.state_dict().items()
    }
    for k, v in init.srnet.state_dict().items():
        assert torch.equal(model.srnet.state_dict()[k], v), k
    if channels == init.cfg.fnet_channels:
        changed = [not torch.equal(v, init.fnet.state_dict()[k]) for k, v in model.fnet.state_dict().items()]
        assert any(changed)
    else:
        assert ck["distill_info"]["fnet_from"] == "fresh"
        assert model.fnet.body[-1].weight.abs().sum() > 0  # zero-initialised last layer moved
    assert set(record["warp_psnr"]) == {"clean", "crf23"}
    assert (tmp_path / "out" / "history.json").is_file()
    assert list((tmp_path / "cache").glob("pairs_*.pt"))


def test_distill_resumes_where_it_stopped(tmp_path, init_ckpt):
    distill(run_cfg(tmp_path, init_ckpt, max_steps=2), teacher=shift_teacher, cache_dir=tmp_path / "cache")
    record = distill(
        run_cfg(tmp_path, init_ckpt, max_steps=4, resume=True), teacher=shift_teacher, cache_dir=tmp_path / "cache"
    )
    assert record["step"] == 4
    assert [r["step"] for r in torch.load(tmp_path / "out" / RESUME_NAME, weights_only=False)["history"]] == [2, 4]
    with pytest.raises(ValueError, match="fnet_channels"):
        distill(run_cfg(tmp_path, init_ckpt, max_steps=6, resume=True, fnet_channels=8), teacher=shift_teacher)


def test_the_command_line_sets_every_field_and_checks_them():
    cfg = DistillConfig.from_args(["--out", "o", "--fnet_channels", "16", "--crops", "64", "48", "--resume"])
    assert (cfg.out, cfg.fnet_channels, cfg.crops, cfg.resume) == ("o", 16, [64, 48], True)
    with pytest.raises(ValueError, match="teacher_input"):
        DistillConfig.from_args(["--out", "o", "--teacher_input", "noisy"])
    with pytest.raises(SystemExit):
        DistillConfig.from_args([])  # --out is required
