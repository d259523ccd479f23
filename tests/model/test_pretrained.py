"""The shipped default model on real clips: long-clip drift and scene cuts.

These need the shared Vimeo-90K sample (../shared/data/vimeo90k_sample) and the shipped checkpoint;
each test skips, saying why, when one is absent.
"""

from pathlib import Path

import numpy as np
import pytest

from common.paths import DEFAULT_MODEL
from testing.helpers import SHARED_DATA

PRETRAINED = DEFAULT_MODEL


def _needs(path: Path, what: str):
    if not path.exists():
        pytest.skip(f"{what} not found at {path}")


@pytest.fixture(scope="module")
def default_model():
    _needs(PRETRAINED, "the shipped default checkpoint")
    from model.checkpoint import load_checkpoint

    return load_checkpoint(PRETRAINED)[0]


def _test_clips():
    _needs(SHARED_DATA, "the shared Vimeo-90K sample")
    from train.data import crop_to_scale, discover_samples, read_clip, read_list

    names = set(read_list(SHARED_DATA, "sep_testlist.txt"))
    return [crop_to_scale(read_clip(s)) for s in discover_samples(SHARED_DATA) if s.name in names]


def _lowres(hr_frames: np.ndarray) -> np.ndarray:
    from model.inference import to_tensor
    from train.evaluate import lowres_frames

    return lowres_frames(to_tensor(hr_frames), "bicubic")


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    from train.metrics import mse, psnr_from_mse

    return psnr_from_mse(mse(a.astype(np.float64) / 255, b.astype(np.float64) / 255))


def looping_clip(hr: np.ndarray, n: int = 300, size: tuple[int, int] = (192, 320), amplitude: int = 48) -> np.ndarray:
    """n frames: the clip played forward and backward in a loop while a crop window pans left-right."""
    t = len(hr)
    order = list(range(t)) + list(range(t - 2, 0, -1))  # 0..6..1, a ping-pong loop
    h, w = size
    frames = []
    for i in range(n):
        x = 8 + int(round(amplitude * (1 - np.cos(2 * np.pi * i / 60)) / 2)) * 1  # smooth back-and-forth pan
        x -= x % 4
        frames.append(hr[order[i % len(order)], 16 : 16 + h, x : x + w])
    return np.stack(frames)


@pytest.mark.slow  # the shipped model over real clips: seconds each
def test_no_drift_over_a_300_frame_clip(default_model):
    """PSNR over the last 30 frames stays within 0.5 dB of the first 30 (after the 1st-frame warm-up)."""
    from model.inference import super_resolve

    hr = looping_clip(_test_clips()[0])
    out = np.stack(list(super_resolve(default_model, _lowres(hr))))
    start, end = _psnr(out[1:31], hr[1:31]), _psnr(out[-30:], hr[-30:])
    assert abs(end - start) < 0.5, f"PSNR drifted from {start:.2f} dB to {end:.2f} dB"


@pytest.mark.slow  # the shipped model over real clips: seconds each
def test_scene_cut_restarts_the_recurrence_on_real_clips(default_model):
    """Two unrelated clips joined: after the cut the output equals a fresh run on the second clip."""
    from model.inference import super_resolve

    clips = _test_clips()
    a, b = clips[0], clips[-1]
    lr_a, lr_b = _lowres(a), _lowres(b)
    joined = list(super_resolve(default_model, np.concatenate([lr_a, lr_b])))
    fresh = list(super_resolve(default_model, lr_b))
    for i in range(len(lr_b)):
        assert np.array_equal(joined[len(lr_a) + i], fresh[i]), f"frame {i} after the cut carries the previous shot"
    # without detection the previous shot leaks into the first frames after the cut
    dragged = list(super_resolve(default_model, np.concatenate([lr_a, lr_b]), cut_threshold=None))
    assert not np.array_equal(dragged[len(lr_a)], fresh[0])


@pytest.mark.slow  # the shipped model over real clips: seconds each
def test_no_false_cut_inside_real_clips(default_model):
    """Consecutive frames of one shot never trigger a restart (the output equals the uncut run)."""
    from model.inference import super_resolve

    for hr in _test_clips():
        lr = _lowres(hr)
        with_cut = list(super_resolve(default_model, lr))
        without = list(super_resolve(default_model, lr, cut_threshold=None))
        assert all(np.array_equal(x, y) for x, y in zip(with_cut, without, strict=True))
