"""train/recipe.py: the long run's recipe and its GPU variant, run on the CPU with a tiny budget."""

from __future__ import annotations

import json

import pytest
import torch

from model.checkpoint import load_checkpoint
from train.config import TrainConfig
from train.recipe import DEFAULT, gpu_settings, main, run


def test_the_recipe_is_valid_settings_and_the_gpu_variant_changes_only_what_a_gpu_needs(capsys):
    assert TrainConfig.from_settings(DEFAULT).degradation == "bicubic"
    gpu = gpu_settings(minutes=8, batch_size=24, workers=8)
    changed = {k for k in DEFAULT if gpu[k] != DEFAULT[k]}
    assert changed == {"max_minutes", "batch_size", "lr", "workers", "threads", "val_every"}
    assert gpu["lr"] == pytest.approx(DEFAULT["lr"] * (24 / DEFAULT["batch_size"]) ** 0.5)
    assert main(["settings"]) == 0 and json.loads(capsys.readouterr().out) == DEFAULT


@pytest.mark.slow
def test_run_trains_through_the_trainer_and_copies_the_kept_checkpoint(tmp_path, seed_dataset, monkeypatch):
    monkeypatch.setenv("FRVSR_RUNS_DIR", str(tmp_path / "runs"))
    tiny = {"channels": 8, "blocks": 1, "hidden": 4, "crop_size": 32, "num_frames": 3}
    # epochs bound it (max_minutes 0: no time budget, which a busy machine could spend on start-up alone)
    settings = {**gpu_settings(minutes=0, batch_size=2, workers=0), **tiny, "extra_datasets": [], "epochs": 2}
    settings["crops_per_clip"] = 2
    path = run(tmp_path / "out", "cpu", settings, seed_dataset, "tiny")
    assert path.parent == tmp_path / "out" and path.is_file()
    model, ckpt = load_checkpoint(path)
    assert model.cfg.channels == 8 and ckpt["train_settings"]["batch_size"] == 2 and ckpt["cpu_seconds"] > 0
    assert ckpt["arch"] == "frvsr-spynet" and model.cfg.flow_scale == DEFAULT["flow_scale"]
    assert torch.isfinite(torch.stack([p.abs().sum() for p in model.parameters()])).all()
