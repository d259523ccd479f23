"""The suite's fixtures: tiny models and a seed-layout dataset. Helpers live in ``testing/`` (the project
root is on ``sys.path`` through the pytest config's ``pythonpath``), shared with the bench."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from testing.clips import moving_clip
from testing.helpers import random_frvsr, write_clip

# The suite's tensors are tiny: one intra-op thread beats two on the 2-core box, where a training job often
# holds the other core. The same for every test whatever ran before (the handler sets it per worker).
torch.set_num_threads(1)


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
