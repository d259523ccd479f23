"""Shared test fixtures: the project root on sys.path, tiny models and tiny synthetic clips."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
SHARED_DATA = ROOT.parent / "shared" / "data" / "vimeo90k_sample"


def moving_clip(t: int = 7, h: int = 64, w: int = 96, dx: int = 2, dy: int = 1, seed: int = 0) -> np.ndarray:
    """uint8 (t, h, w, 3): a smooth random texture translating by (dx, dy) pixels per frame."""
    rng = np.random.default_rng(seed)
    big_h, big_w = h + abs(dy) * t + 8, w + abs(dx) * t + 8
    base = rng.random((big_h // 4 + 1, big_w // 4 + 1, 3))
    import cv2

    tex = cv2.resize(base, (big_w, big_h), interpolation=cv2.INTER_CUBIC)
    tex = (np.clip(tex, 0, 1) * 255).astype(np.uint8)
    frames = []
    for i in range(t):
        y0 = 4 + (dy * i if dy >= 0 else abs(dy) * (t - i))
        x0 = 4 + (dx * i if dx >= 0 else abs(dx) * (t - i))
        frames.append(tex[y0 : y0 + h, x0 : x0 + w])
    return np.stack(frames)


def write_clip(folder: Path, clip: np.ndarray, pattern: str = "frame_{}.png", start: int = 1) -> Path:
    import cv2

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

    return FRVSRConfig(channels=8, blocks=1, fnet_channels=4)


@pytest.fixture
def seed_dataset(tmp_path: Path) -> Path:
    """The seed layout: dataset/sample_x/frame_1.png ... with 7 frames of 64x64 each."""
    root = tmp_path / "dataset"
    for i in range(4):
        write_clip(root / f"sample_{i}", moving_clip(7, 64, 64, dx=1 + i % 2, dy=i % 3 - 1, seed=i))
    return root
