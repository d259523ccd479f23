"""Metrics against scikit-image, aggregation as the platform defines it, and JSON safety."""

import json
import math

import numpy as np
import pytest
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from train.metrics import PSNR_CAP, Aggregate, Exact, json_safe, mse, psnr_from_mse, score_clip, ssim


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
    want = np.mean([structural_similarity(a, b, data_range=1.0, channel_axis=-1) for a, b in zip(pred, gt)])
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
    assert r["MSE"] == pytest.approx((a.mse + b.mse) / 2)
    assert r["PSNR"] == pytest.approx(10 * math.log10(1 / r["MSE"]))
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
