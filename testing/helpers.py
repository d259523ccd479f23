"""Helpers the tests share: the platform's trial fields, the client command lines, clips written as image
folders, and FRVSRs whose every layer is random. (pytest fixtures stay in ``tests/conftest.py``.)"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from common.paths import ROOT, VIMEO_SAMPLE
from testing.clips import moving_clip

__all__ = [
    "ROOT", "SHARED_DATA", "TRIAL_KEYS", "client_test_argv", "client_train_argv", "moving_clip", "random_frvsr",
    "write_clip",
]  # fmt: skip

SHARED_DATA = VIMEO_SAMPLE
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
