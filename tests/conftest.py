"""Shared test fixtures and helpers: paths, tiny models, clips written as image folders.

The project root is on ``sys.path`` through the pytest config (``pythonpath``) and ``tests/`` because pytest
puts a test file's folder there, so tests import ``from conftest import ...`` and ``from clips import ...``.
``moving_clip`` lives in ``clips`` (with the video encoder) and is re-exported here.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from clips import moving_clip

__all__ = [
    "ROOT", "SHARED_DATA", "TRIAL_KEYS", "client_test_argv", "client_train_argv", "moving_clip", "random_frvsr",
    "write_clip",
]  # fmt: skip

ROOT = Path(__file__).resolve().parent.parent
# the fields of a training run's trial.txt: the platform's contract, written out here on purpose
TRIAL_KEYS = {
    "recom_model",
    "gened_model_name",
    "metric_type",
    "metric_value",
    "used_models",
    "model_path",
    "model_params",
    "eval_result",
    "predict_prob",
    "train_consuming",
}
SHARED_DATA = ROOT.parent / "shared" / "data" / "vimeo90k_sample"

# The suite's tensors are tiny: one intra-op thread beats two on the 2-core box, where a training job often
# holds the other core. The same for every test whatever ran before (the handler sets it per worker).
torch.set_num_threads(1)


def client_train_argv(dataset, trial_name: str, annotation_data: str) -> list[str]:
    """``client_train.py`` and its three contract arguments, for a subprocess (after the interpreter or torchrun)."""
    return [
        str(ROOT / "client_train.py"),
        "--dataset_path", str(dataset),
        "--trial_name", trial_name,
        "--annotation_data", annotation_data,
    ]  # fmt: skip


def client_test_argv(dataset, model_path, used_model: str) -> list[str]:
    """``client_test.py`` and its contract arguments, for a subprocess."""
    return [
        str(ROOT / "client_test.py"),
        "--dataset_path", str(dataset),
        "--model_path", str(model_path),
        "--used_model", used_model,
    ]  # fmt: skip


def write_clip(folder: Path, clip: np.ndarray, pattern: str = "frame_{}.png", start: int = 1) -> Path:
    """``clip`` (uint8 (t, h, w, 3) RGB) as numbered images in ``folder``; returns ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, f in enumerate(clip):
        cv2.imwrite(str(folder / pattern.format(i + start)), cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    return folder


def random_frvsr(cfg, seed: int = 0):
    """An FRVSR whose every layer is random.

    A fresh FRVSR starts at bicubic with zero flow (its last layers are zero-initialised), so its output
    ignores the previous estimate; tests that probe the recurrence or compare two code paths need one
    whose every part contributes.
    """
    import torch

    from model.frvsr import FRVSR

    torch.manual_seed(seed)
    model = FRVSR(cfg)
    for m in model.modules():
        if isinstance(m, torch.nn.Conv2d):
            m.reset_parameters()
    return model


@pytest.fixture
def tiny_cfg():
    from model.frvsr import FRVSRConfig

    return FRVSRConfig(channels=8, blocks=1, fnet_channels=4, hidden=4)


@pytest.fixture(scope="session")
def tiny_model():
    """A tiny FRVSR in eval mode with every layer random (see ``random_frvsr``); tests must not train it."""
    from model.frvsr import FRVSRConfig

    return random_frvsr(FRVSRConfig(channels=8, blocks=1, fnet_channels=4, hidden=4)).eval()


@pytest.fixture
def seed_dataset(tmp_path: Path) -> Path:
    """The seed layout: dataset/sample_x/frame_1.png ... with 7 frames of 64x64 each."""
    root = tmp_path / "dataset"
    for i in range(4):
        write_clip(root / f"sample_{i}", moving_clip(7, 64, 64, dx=1 + i % 2, dy=i % 3 - 1, seed=i))
    return root
