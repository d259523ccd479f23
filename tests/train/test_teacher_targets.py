"""train/teacher_targets.py and distillation: the teacher's output of each clip is computed once (and goes on after
an interruption), a window's targets are cut and flipped with its frames, the loss adds the L2 to them, and a run
with ``distill`` trains and counts their CPU time."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from model.frvsr import FRVSR, FRVSRConfig
from testing.helpers import moving_clip
from train import recipe
from train.config import TrainConfig
from train.data import TrainClips, crop_to_scale, discover_samples, read_clip
from train.losses import frvsr_loss
from train.teacher_targets import STATE, TeacherTargets, clip_targets
from train.trainer import train


@pytest.fixture(autouse=True)
def runs(tmp_path, monkeypatch):
    monkeypatch.setenv("FRVSR_RUNS_DIR", str(tmp_path / "runs"))


def _teacher() -> FRVSR:
    torch.manual_seed(0)
    return FRVSR(FRVSRConfig(channels=8, blocks=1, fnet_channels=4, hidden=4)).eval()


def test_targets_are_the_teachers_output_of_the_clean_low_res_clip_cached_and_resumed(seed_dataset, tmp_path):
    samples = discover_samples(seed_dataset)[:2]
    clips = [crop_to_scale(read_clip(s)) for s in samples]
    frames = [s.frames for s in samples]
    teacher = _teacher()
    cache = TeacherTargets(teacher, "fp32")
    targets, cpu = cache.load_or_compute(frames, clips)
    assert cpu > 0 and [t.shape for t in targets] == [c.shape for c in clips]
    assert all(t.dtype == np.uint8 for t in targets)
    np.testing.assert_array_equal(targets[1], clip_targets(teacher, clips[1], "fp32"))
    assert not np.array_equal(targets[0], clips[0])  # the teacher's frames, not the ground truth

    folder = tmp_path / "runs" / "teacher_targets" / cache.key(frames)
    mtime = (folder / "0.npy").stat().st_mtime_ns
    again, cpu_again = cache.load_or_compute(frames, clips)  # found, not computed
    assert cpu_again == cpu and (folder / "0.npy").stat().st_mtime_ns == mtime
    np.testing.assert_array_equal(again[0], targets[0])

    (folder / "1.npy").unlink()  # as if stopped after the first clip
    (folder / STATE).write_text(json.dumps({"done": 1, "cpu_seconds": 5.0}))
    resumed, cpu_resumed = cache.load_or_compute(frames, clips)
    assert (folder / "0.npy").stat().st_mtime_ns == mtime  # the first clip kept, the second computed again
    np.testing.assert_array_equal(resumed[1], targets[1])
    assert cpu_resumed > 5.0

    other = TeacherTargets(FRVSR(FRVSRConfig(channels=8, blocks=1, fnet_channels=4, hidden=4)), "fp32")
    assert other.key(frames) != cache.key(frames)  # other weights: other targets


def test_a_windows_targets_are_cut_and_flipped_with_its_frames():
    clips = [moving_clip(6, 64, 64, dx=2, dy=1, seed=s) for s in range(2)]
    data = TrainClips([], 5, 32, "bicubic", 8, clips, targets=clips)  # the clip as its own target
    for i in range(40):  # every flip and reversal shows up
        lr, hr, target = data[i % len(data)]
        assert target.shape == hr.shape and torch.equal(target, hr)
    with pytest.raises(ValueError, match="one for one"):
        TrainClips([], 5, 32, "bicubic", 8, clips, targets=clips[:1])


def test_a_windows_crop_starts_on_the_low_res_grid_the_targets_were_made_on():
    x, y = np.meshgrid(np.arange(64) % 4 * 50, np.arange(64) % 4 * 50)
    phase = np.stack([x, y, np.zeros_like(x)], axis=-1).astype(np.uint8)  # each pixel's x and y mod 4
    clips = [np.stack([phase] * 6)]
    data = TrainClips([], 5, 32, "bicubic", 8, clips, targets=clips)
    for i in range(40):
        _, hr, _ = data[i % len(data)]
        corner = {round(v * 255) for v in hr[0, :2, 0, 0].tolist()}  # a crop's first or last column and row
        assert corner <= {0, 150}, corner  # (flipped) on a multiple of 4 of the whole frame


def test_the_loss_adds_the_distance_to_the_teacher():
    model = _teacher()
    lr, hr = torch.rand(1, 3, 3, 8, 8), torch.rand(1, 3, 3, 32, 32)
    base, stats = frvsr_loss(model, lr, hr, 0.5)
    assert "distill" not in stats
    same, same_stats = frvsr_loss(model, lr, hr, 0.5, teacher=hr, distill=0.25)
    assert same_stats["distill"] == pytest.approx(same_stats["pixel"])
    assert same.item() == pytest.approx(base.item() + 0.25 * stats["pixel"], rel=1e-5)


def test_distillation_needs_clean_input_and_the_pixel_stage():
    with pytest.raises(ValueError, match="bicubic"):
        TrainConfig(distill=0.5, degradation="realistic")
    with pytest.raises(ValueError, match="gan off"):
        TrainConfig(distill=0.5, degradation="bicubic", gan=True)
    with pytest.raises(ValueError, match="distill must be >= 0"):
        TrainConfig(distill=-1.0, degradation="bicubic")
    with pytest.raises(ValueError, match="distill_teacher must be one of.*'BIx4'"):
        TrainConfig(distill=0.5, degradation="bicubic", distill_teacher="BIX4")
    with pytest.raises(ValueError, match="trained on bicubic"):
        TrainConfig(distill=0.5, degradation="bicubic", distill_teacher="BDx4")


@pytest.mark.slow
def test_a_run_with_distillation_trains_and_counts_the_teachers_cpu_time(seed_dataset, tmp_path, capsys):
    settings = {
        "distill": 0.5, "channels": 8, "blocks": 1, "hidden": 4, "fnet_channels": 4, "crop_size": 32, "num_frames": 5,
        "epochs": 1, "crops_per_clip": 2, "batch_size": 2, "degradation": "bicubic", "workers": 1, "threads": 1,
    }  # fmt: skip
    annotation = json.dumps({"advance_settings": settings})
    assert recipe.main(["targets", "--dataset_path", str(seed_dataset), "--annotation_data", annotation]) == 0
    assert "teacher targets of 3 training clips" in capsys.readouterr().out  # ahead of the run
    folders = list((tmp_path / "runs" / "teacher_targets").iterdir())  # BasicVSR's released weights, on 64x64 clips
    assert len(folders) == 1
    state = json.loads((folders[0] / STATE).read_text())
    assert state["done"] == len(list(folders[0].glob("*.npy"))) == 3 and state["cpu_seconds"] > 0
    mtime = (folders[0] / "0.npy").stat().st_mtime_ns
    trial = train(str(seed_dataset), TrainConfig.from_settings(settings), "distilled")
    assert list((tmp_path / "runs" / "teacher_targets").iterdir()) == folders  # the run found them
    assert (folders[0] / "0.npy").stat().st_mtime_ns == mtime
    run_state = torch.load(trial["model_path"] + "/resume.pt", weights_only=False)["run_state"]
    assert run_state["inherited_cpu_seconds"] == state["cpu_seconds"]  # carried: in the model's total, not its own
    assert run_state["cpu_seconds"] > state["cpu_seconds"]
    assert json.loads(open(trial["model_path"] + "/settings.json").read())["distill"] == 0.5

    # a distill run started from that one on the same clips: the targets are in init_from's CPU time already
    kept = next(Path(trial["model_path"]).glob("FRVSR_GAN_*.pth"))
    assert torch.load(kept, weights_only=True)["counted_targets"] == [folders[0].name]
    again = train(str(seed_dataset), TrainConfig.from_settings({**settings, "init_from": str(kept)}), "distilled2")
    second = torch.load(again["model_path"] + "/resume.pt", weights_only=False)["run_state"]
    assert second["inherited_cpu_seconds"] == torch.load(kept, weights_only=True)["cpu_seconds"]
    assert second["counted_targets"] == [folders[0].name]
