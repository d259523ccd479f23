"""train/trainer.py in-process: several dataset folders, ping-pong windows, and resume after an interruption."""

import json

import pytest
import torch

from model.checkpoint import load_checkpoint
from testing.helpers import moving_clip, write_clip
from train.config import TrainConfig
from train.data import TrainClips, discover_samples, pingpong_indices
from train.resume import RESUME_FILE
from train.trainer import cosine_lr, load_splits, train

TINY = {
    "channels": 8,
    "blocks": 1,
    "fnet_channels": 4,
    "hidden": 4,
    "crop_size": 32,
    "num_frames": 9,
    "epochs": 3,
    "crops_per_clip": 2,
    "batch_size": 2,
    "degradation": "bicubic",
    "workers": 0,
    "threads": 1,
}


@pytest.fixture
def second_dataset(tmp_path):
    """A Vimeo-style folder with its own split lists: 3 clips of 12 frames, one held out."""
    root = tmp_path / "second"
    for i in range(3):
        write_clip(
            root / "sequences" / "00001" / f"000{i}", moving_clip(12, 64, 96, dx=2, dy=1, seed=10 + i), "im{}.png"
        )
    (root / "sep_trainlist.txt").write_text("00001/0000\n00001/0001\n")
    (root / "sep_testlist.txt").write_text("00001/0002\n")
    return root


@pytest.fixture(autouse=True)
def runs(tmp_path, monkeypatch):
    monkeypatch.setenv("FRVSR_RUNS_DIR", str(tmp_path / "runs"))


def test_pingpong_indices_bounce_off_both_ends():
    assert pingpong_indices(4, 9) == [0, 1, 2, 3, 2, 1, 0, 1, 2]
    assert pingpong_indices(4, 3, start=5) == [1, 0, 1]
    assert pingpong_indices(40, 5, start=10) == [10, 11, 12, 13, 14]
    with pytest.raises(ValueError):
        pingpong_indices(1, 3)


def test_windows_longer_than_a_clip_play_it_back_and_forth(seed_dataset):
    ds = TrainClips(
        discover_samples(seed_dataset), num_frames=12, crop_size=32, degradation="bicubic", crops_per_clip=1
    )
    lr, hr = ds[0]  # the clips have 7 frames
    assert hr.shape == (12, 3, 32, 32) and lr.shape == (12, 3, 8, 8)
    distinct = {tuple(f.flatten()[:64].tolist()) for f in hr}
    assert len(distinct) == 7  # all of the clip's frames, some twice


def test_extra_datasets_add_their_own_splits(seed_dataset, second_dataset):
    cfg = TrainConfig.from_settings({**TINY, "extra_datasets": [str(second_dataset)]})
    train_s, val_s = load_splits(str(seed_dataset), cfg)
    assert sorted(s.name for s in train_s if s.name.startswith("00001")) == ["00001/0000", "00001/0001"]
    assert [s.name for s in val_s if s.name.startswith("00001")] == ["00001/0002"]
    assert len([s for s in train_s if s.name.startswith("sample_")]) == 3  # the seed folder: val_split of 4
    with pytest.raises(ValueError, match="extra_datasets"):
        TrainConfig.from_settings({"extra_datasets": [""]})


def _steps(trial: dict) -> int:
    with open(trial["model_path"] + "/history.json") as f:
        return json.load(f)[-1]["step"]


def test_an_interrupted_run_resumes_to_the_same_step_count_and_keeps_its_best(seed_dataset, second_dataset):
    settings = {**TINY, "extra_datasets": [str(second_dataset)]}  # 5 training clips x 2 windows / 2 = 5 steps an epoch
    full = train(str(seed_dataset), TrainConfig.from_settings(settings), "full")
    assert _steps(full) == 15

    polls = {"n": 0}

    def stop_after_an_epoch() -> bool:
        polls["n"] += 1
        return polls["n"] >= 5

    part = train(str(seed_dataset), TrainConfig.from_settings(settings), "part", stop_requested=stop_after_an_epoch)
    folder = part["model_path"]
    assert _steps(part) == 5
    saved = torch.load(f"{folder}/{RESUME_FILE}", weights_only=False)
    assert saved["run_state"]["step"] == 5 and saved["run_state"]["best_psnr"] == part["metric_value"]

    resumed = train(
        str(seed_dataset),
        TrainConfig.from_settings({"resume": folder, "threads": 1}),
        "ignored",
        given={"resume", "threads"},
    )
    assert resumed["model_path"] == folder and resumed["gened_model_name"] == "FRVSR_GAN_part"
    assert _steps(resumed) == _steps(full)
    assert resumed["train_consuming"]["train_time"] > part["train_consuming"]["train_time"]
    # weights, optimiser, schedule position and RNG streams were all restored: the resumed run ends exactly
    # where the uninterrupted one did (one process, workers 0)
    end_full = torch.load(f"{full['model_path']}/{RESUME_FILE}", weights_only=False)["model"]
    end_resumed = torch.load(f"{folder}/{RESUME_FILE}", weights_only=False)["model"]
    assert all(torch.equal(end_full[k], end_resumed[k]) for k in end_full)
    # the kept checkpoint is the best validation of the whole run, first session included
    history = json.loads(open(f"{folder}/history.json").read())
    validations = [h for h in history if "val_psnr" in h]
    assert [h["step"] for h in validations] == [5, 10, 15]
    _, ckpt = load_checkpoint(f"{folder}/FRVSR_GAN_part.pth")
    best = max(validations, key=lambda h: h["val_psnr"])
    assert ckpt["step"] == best["step"] and ckpt["eval"]["PSNR"] == pytest.approx(resumed["metric_value"], abs=1e-4)


def test_resume_refuses_changed_settings_and_missing_state(seed_dataset, tmp_path):
    part = train(str(seed_dataset), TrainConfig.from_settings({**TINY, "epochs": 1}), "p")
    with pytest.raises(ValueError, match="cannot change"):
        train(
            str(seed_dataset),
            TrainConfig.from_settings({"resume": part["model_path"], "lr": 1e-3}),
            "x",
            given={"resume", "lr"},
        )
    with pytest.raises(FileNotFoundError, match="resume"):
        train(str(seed_dataset), TrainConfig.from_settings({"resume": str(tmp_path)}), "x", given={"resume"})


def test_a_run_from_init_from_says_and_keeps_the_files_network_and_resumes_with_its_own_annotation(seed_dataset):
    base = train(str(seed_dataset), TrainConfig.from_settings({**TINY, "epochs": 1}), "base")
    annotation = {**TINY, "channels": 12, "epochs": 2, "init_from": f"{base['model_path']}/FRVSR_GAN_base.pth"}
    first = {**annotation, "epochs": 1}
    grown = train(str(seed_dataset), TrainConfig.from_settings(first), "grown", given=set(first))
    saved, steps = torch.load(f"{grown['model_path']}/{RESUME_FILE}", weights_only=False), _steps(grown)
    assert saved["settings"]["channels"] == 8  # the file's network, not the annotation's 12
    resumed = train(  # the same annotation_data again, with resume: accepted, the file's network goes on
        str(seed_dataset),
        TrainConfig.from_settings({**annotation, "resume": grown["model_path"]}),
        "x",
        given={*annotation, "resume"},
    )
    assert resumed["model_params"]["channels"] == 8 and _steps(resumed) > steps


def test_a_cpu_time_budget_stops_the_run_once_its_own_cpu_seconds_are_spent(seed_dataset):
    settings = {**TINY, "epochs": 10_000, "max_minutes": 0.0, "max_cpu_minutes": 0.02, "val_every": 10_000}
    trial = train(str(seed_dataset), TrainConfig.from_settings(settings), "cpu_budget")
    history = json.loads(open(trial["model_path"] + "/history.json").read())
    final = [h for h in history if "val_psnr" in h][-1]
    assert 0 < _steps(trial) < 10_000  # stopped by the CPU budget (1.2 s), long before the epochs ran out
    assert final["own_cpu_seconds"] >= 1.2 and final["cpu_seconds"] >= final["own_cpu_seconds"]


def test_warmup_ramps_the_learning_rate_linearly_then_hands_over_to_the_cosine():
    cfg = TrainConfig(lr=1e-4, lr_min=1e-6, warmup_steps=4)
    assert [cosine_lr(cfg, 0.0, s) for s in range(3)] == pytest.approx([2.5e-5, 5e-5, 7.5e-5])
    assert cosine_lr(cfg, 0.0, 3) == pytest.approx(1e-4)
    assert cosine_lr(cfg, 0.5, 500) == pytest.approx(cosine_lr(TrainConfig(lr=1e-4, lr_min=1e-6), 0.5, 500))
    assert cosine_lr(TrainConfig(lr=1e-4, lr_min=1e-6), 0.0, 0) == pytest.approx(1e-4)  # none by default
