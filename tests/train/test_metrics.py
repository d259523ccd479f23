"""Metrics against scikit-image, aggregation as the platform defines it, and JSON safety."""

import json
import math

import numpy as np
import pytest
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from testing.clips import moving_clip
from train.metrics import (
    PSNR_CAP,
    Aggregate,
    Exact,
    SampleScore,
    json_safe,
    mse,
    optical_flows,
    psnr_from_mse,
    score_clip,
    ssim,
    tof,
)


def _clips(seed=0, t=3):
    rng = np.random.default_rng(seed)
    gt = rng.random((t, 24, 32, 3))
    pred = np.clip(gt + rng.normal(0, 0.05, gt.shape), 0, 1)
    return pred, gt


def test_psnr_matches_scikit_image():
    pred, gt = _clips()
    assert psnr_from_mse(mse(pred, gt)) == pytest.approx(peak_signal_noise_ratio(gt, pred, data_range=1.0), abs=1e-9)


def test_ssim_is_mean_of_per_frame_scikit_image_ssim():
    pred, gt = _clips()
    frames = zip(pred, gt, strict=True)
    want = np.mean([structural_similarity(a, b, data_range=1.0, channel_axis=-1) for a, b in frames])
    assert ssim(pred, gt) == pytest.approx(want, abs=1e-12)


def test_identical_frames_give_infinite_psnr_written_as_the_cap():
    _, gt = _clips()
    s = score_clip("same", gt, gt)
    assert s.mse == 0 and math.isinf(s.psnr) and s.ssim == pytest.approx(1.0)
    agg = Aggregate([s])
    text = json.dumps(json_safe(agg.result()), allow_nan=False)
    assert json.loads(text)["PSNR"] == PSNR_CAP


def test_aggregate_follows_the_platform_definition():
    a, b = score_clip("a", *_clips(0)), score_clip("b", *_clips(1))
    r = Aggregate([a, b]).result()
    assert r["MSE"] == pytest.approx((a.mse + b.mse) / 2 * 255**2)  # reported on the 8-bit scale
    assert r["PSNR"] == pytest.approx(10 * math.log10(255**2 / r["MSE"]))
    assert r["SSIMs"] == pytest.approx(a.ssim + b.ssim)
    assert r["SSIM"] == pytest.approx((a.ssim + b.ssim) / 2)
    with pytest.raises(ValueError):
        Aggregate().result()


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="shape"):
        mse(np.zeros((1, 4, 4, 3)), np.zeros((1, 4, 5, 3)))


def test_json_safe_rounds_metrics_but_not_settings():
    out = json_safe({"PSNR": 31.123456, "nan": float("nan"), "params": Exact({"lr_min": 1e-5})})
    assert out == {"PSNR": 31.1235, "nan": None, "params": {"lr_min": 1e-5}}


# ----------------------------------------------------------------------------- temporal consistency (tOF)
# The flow convention, edge cases, and that flicker scores worse (moved here from test_temporal.py).


def _as_float(clip: np.ndarray) -> np.ndarray:
    return clip.astype(np.float64) / 255.0


def test_tof_flow_follows_the_motion():
    # the view pans right 2, down 1: content moves left 2, up 1
    flows = optical_flows(_as_float(moving_clip(4, 64, 96, dx=2, dy=1)))
    assert flows.shape == (3, 64, 96, 2)
    inner = flows[:, 12:-12, 12:-12].reshape(-1, 2)
    assert np.median(inner, axis=0) == pytest.approx([-2.0, -1.0], abs=0.2)


def test_tof_is_zero_for_a_static_clip_and_for_identical_output():
    static = _as_float(np.repeat(moving_clip(1, 48, 48)[:1], 5, axis=0))
    assert tof(static, static) == pytest.approx(0.0, abs=1e-6)
    moving = _as_float(moving_clip(5, 48, 64))
    assert tof(moving, moving) == 0.0


def test_tof_flicker_scores_worse_than_the_same_error_held_still():
    """Equal per-frame error (same PSNR), but only noise that changes every frame is temporal inconsistency."""
    rng = np.random.default_rng(0)
    gt = _as_float(np.repeat(moving_clip(1, 48, 48)[:1], 5, axis=0))
    held = np.clip(gt + rng.normal(0, 0.03, gt.shape[1:]), 0, 1)  # one noise pattern in every frame
    flicker = np.clip(gt + rng.normal(0, 0.03, gt.shape), 0, 1)  # new noise every frame
    assert abs(score_clip("a", held, gt).psnr - score_clip("b", flicker, gt).psnr) < 0.2
    assert tof(held, gt) < 1e-3
    assert tof(flicker, gt) > 0.02


def test_tof_brightness_flicker_on_moving_content_scores_worse():
    gt = _as_float(moving_clip(6, 48, 64, dx=1, dy=1))
    gain = np.array([1.0, 0.8, 1.0, 0.8, 1.0, 0.8]).reshape(-1, 1, 1, 1)
    assert tof(np.clip(gt * gain, 0, 1), gt) > tof(gt, gt) + 0.02


def test_tof_precomputed_target_flows_give_the_same_score():
    gt = _as_float(moving_clip(4, 32, 48))
    pred = np.clip(gt + np.random.default_rng(1).normal(0, 0.02, gt.shape), 0, 1)
    assert tof(pred, gt, optical_flows(gt)) == pytest.approx(tof(pred, gt))
    s = score_clip("x", pred, gt, target_flows=optical_flows(gt))
    assert s.tof == pytest.approx(tof(pred, gt))
    assert math.isnan(score_clip("x", pred, gt).tof)  # not asked for: nan


def test_tof_bad_input_is_an_error():
    one = np.zeros((1, 16, 16, 3))
    with pytest.raises(ValueError, match="at least 2 frames"):
        tof(one, one)
    with pytest.raises(ValueError, match="shape"):
        tof(np.zeros((3, 16, 16, 3)), np.zeros((3, 16, 24, 3)))
    with pytest.raises(ValueError, match="target_flows"):
        tof(np.zeros((3, 16, 16, 3)), np.zeros((3, 16, 16, 3)), np.zeros((1, 16, 16, 2), np.float32))


def test_aggregate_tof_ignores_samples_without_one():
    scores = [SampleScore("a", 0.1, 0.5, tof=0.2), SampleScore("b", 0.1, 0.5, tof=0.4), SampleScore("c", 0.1, 0.5)]
    agg = Aggregate(scores)
    assert agg.tof() == pytest.approx(0.3)
    assert math.isnan(Aggregate([SampleScore("c", 0.1, 0.5)]).tof())
