"""Temporal consistency (tOF): the flow convention, edge cases, and that flicker scores worse."""

import math

import numpy as np
import pytest

from conftest import moving_clip
from train.metrics import Aggregate, SampleScore, optical_flows, score_clip, tof


def _f(clip: np.ndarray) -> np.ndarray:
    return clip.astype(np.float64) / 255.0


def test_flow_follows_the_motion():
    flows = optical_flows(_f(moving_clip(4, 64, 96, dx=2, dy=1)))  # the view pans right 2, down 1: content moves left 2, up 1
    assert flows.shape == (3, 64, 96, 2)
    inner = flows[:, 12:-12, 12:-12].reshape(-1, 2)
    assert np.median(inner, axis=0) == pytest.approx([-2.0, -1.0], abs=0.2)


def test_static_clip_and_identical_output_give_zero():
    static = _f(np.repeat(moving_clip(1, 48, 48)[:1], 5, axis=0))
    assert tof(static, static) == pytest.approx(0.0, abs=1e-6)
    moving = _f(moving_clip(5, 48, 64))
    assert tof(moving, moving) == 0.0


def test_flicker_scores_worse_than_the_same_error_held_still():
    """Equal per-frame error (same PSNR), but only noise that changes every frame is temporal inconsistency."""
    rng = np.random.default_rng(0)
    gt = _f(np.repeat(moving_clip(1, 48, 48)[:1], 5, axis=0))
    held = np.clip(gt + rng.normal(0, 0.03, gt.shape[1:]), 0, 1)  # one noise pattern in every frame
    flicker = np.clip(gt + rng.normal(0, 0.03, gt.shape), 0, 1)  # new noise every frame
    assert abs(score_clip("a", held, gt).psnr - score_clip("b", flicker, gt).psnr) < 0.2
    assert tof(held, gt) < 1e-3
    assert tof(flicker, gt) > 0.02


def test_brightness_flicker_on_moving_content_scores_worse():
    gt = _f(moving_clip(6, 48, 64, dx=1, dy=1))
    gain = np.array([1.0, 0.8, 1.0, 0.8, 1.0, 0.8]).reshape(-1, 1, 1, 1)
    assert tof(np.clip(gt * gain, 0, 1), gt) > tof(gt, gt) + 0.02


def test_precomputed_target_flows_give_the_same_score():
    gt = _f(moving_clip(4, 32, 48))
    pred = np.clip(gt + np.random.default_rng(1).normal(0, 0.02, gt.shape), 0, 1)
    assert tof(pred, gt, optical_flows(gt)) == pytest.approx(tof(pred, gt))
    s = score_clip("x", pred, gt, target_flows=optical_flows(gt))
    assert s.tof == pytest.approx(tof(pred, gt))
    assert math.isnan(score_clip("x", pred, gt).tof)  # not asked for: nan


def test_bad_input_is_an_error():
    one = np.zeros((1, 16, 16, 3))
    with pytest.raises(ValueError, match="at least 2 frames"):
        tof(one, one)
    with pytest.raises(ValueError, match="shape"):
        tof(np.zeros((3, 16, 16, 3)), np.zeros((3, 16, 24, 3)))
    with pytest.raises(ValueError, match="target_flows"):
        tof(np.zeros((3, 16, 16, 3)), np.zeros((3, 16, 16, 3)), np.zeros((1, 16, 16, 2), np.float32))


def test_aggregate_tof_ignores_samples_without_one():
    agg = Aggregate([SampleScore("a", 0.1, 0.5, tof=0.2), SampleScore("b", 0.1, 0.5, tof=0.4), SampleScore("c", 0.1, 0.5)])
    assert agg.tof() == pytest.approx(0.3)
    assert math.isnan(Aggregate([SampleScore("c", 0.1, 0.5)]).tof())
