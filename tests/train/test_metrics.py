"""Metrics against scikit-image, aggregation as the platform defines it, and JSON safety."""

import json
import math
import socket

import cv2
import numpy as np
import pytest
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

import train.metrics
from testing.clips import moving_clip
from train.metrics import (
    PSNR_CAP,
    Aggregate,
    Exact,
    SampleScore,
    brisque,
    json_safe,
    mse,
    optical_flows,
    psnr_from_mse,
    score_clip,
    ssim,
    tof,
    vmaf,
    vmaf_motion,
    vmaf_neg,
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


# ----------------------------------------------------------------------------- VMAF, VMAF NEG, BRISQUE
# Known values of the port (vmaf-torch 1.1.0, model v0.6.1) on a small moving texture, and the orderings each
# measure exists for. Each call takes a fraction of a second at these sizes.


@pytest.fixture(scope="module")
def texture():
    """6 frames of 96x128 moving texture (features ~8 px), uint8, and its blurred and sharpened copies."""
    gt = moving_clip(6, 96, 128, dx=2, dy=1, grain=8)
    blurred = np.stack([cv2.GaussianBlur(f, (0, 0), 1.5) for f in gt])
    sharpened = np.stack([cv2.addWeighted(f, 2.0, cv2.GaussianBlur(f, (0, 0), 1.0), -1.0, 0) for f in gt])  # unsharp
    return {name: _as_float(c) for name, c in (("gt", gt), ("blurred", blurred), ("sharpened", sharpened))}


def test_vmaf_of_identical_clips_is_the_models_ceiling_not_100(texture):
    """The port's v0.6.1 gives identical input 97.43 without motion, more with it (motion enters the fusion)."""
    gt = texture["gt"]
    assert vmaf(gt, gt) == pytest.approx(99.571, abs=0.01)
    assert vmaf_neg(gt, gt) == pytest.approx(vmaf(gt, gt), abs=1e-4)  # no enhancement to limit: the same
    static = np.repeat(gt[:1], 4, axis=0)
    assert vmaf(static, static) == pytest.approx(97.428, abs=0.01)


def test_vmaf_blur_scores_clearly_lower_and_neg_agrees(texture):
    gt, blurred = texture["gt"], texture["blurred"]
    assert 70 < vmaf(blurred, gt) < 85  # 77.3
    assert vmaf_neg(blurred, gt) == pytest.approx(vmaf(blurred, gt), abs=0.2)  # a loss, not an enhancement


def test_vmaf_rewards_sharpening_and_vmaf_neg_does_not(texture):
    """VMAF NEG limits VIF's and ADM's enhancement gain to 1: sharpening, which plain VMAF counts as a gain,
    is no longer quality."""
    gt, sharpened = texture["gt"], texture["sharpened"]
    same = vmaf(gt, gt)
    assert vmaf(sharpened, gt) > same + 0.3  # 100.0: clipped at the top
    assert vmaf_neg(sharpened, gt) < same - 1.0  # 98.37
    assert vmaf(sharpened, gt) - vmaf_neg(sharpened, gt) > 1.0


def test_vmaf_in_chunks_and_with_a_precomputed_motion_is_the_same(texture, monkeypatch):
    gt, blurred = texture["gt"], texture["blurred"]
    whole_motion, whole = vmaf_motion(gt), vmaf(blurred, gt)
    assert whole_motion.shape == (6,) and whole_motion[0] == 0 and (whole_motion[1:] > 0).all()
    assert vmaf(blurred, gt, target_motion=whole_motion) == whole
    for frames in (1, 2, 4):  # chunk borders at every place: each frame still sees both neighbours
        monkeypatch.setattr(train.metrics, "VMAF_CHUNK_PIXELS", frames * 96 * 128)
        np.testing.assert_array_equal(vmaf_motion(gt), whole_motion)
        assert vmaf(blurred, gt) == pytest.approx(whole, abs=1e-4)


def test_vmaf_bad_input_is_an_error(texture):
    gt = texture["gt"]
    with pytest.raises(ValueError, match="shape"):
        vmaf(gt[:, :64], gt)
    with pytest.raises(ValueError, match="target_motion"):
        vmaf(gt, gt, target_motion=np.zeros(3, np.float32))
    with pytest.raises(ValueError, match="at least 17x17"):
        vmaf(gt[:, :16], gt[:, :16])


def _one_over_f(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A natural-ish RGB image in [0, 1]: random phases, amplitude falling as 1/frequency (natural images'
    spectrum)."""
    rng = np.random.default_rng(seed)
    f = np.hypot(np.fft.fftfreq(h)[:, None], np.fft.rfftfreq(w)[None, :])
    f[0, 0] = np.inf  # no DC: the mean is set below
    spectrum = (rng.normal(size=(3, *f.shape)) + 1j * rng.normal(size=(3, *f.shape))) / f
    im = np.moveaxis(np.fft.irfft2(spectrum, s=(h, w)), 0, -1)
    return np.clip(0.5 + 0.18 * (im - im.mean()) / im.std(), 0, 1)


def test_brisque_natural_image_beats_its_noisy_and_blurred_copies():
    img = _one_over_f(128, 128)
    noisy = np.clip(img + np.random.default_rng(1).normal(0, 0.1, img.shape), 0, 1)
    blurred = cv2.GaussianBlur(img, (0, 0), 2.0)
    natural = brisque(img[None])  # 40.1
    assert 25 < natural < 50
    assert brisque(noisy[None]) > natural + 8  # 54.0
    assert brisque(blurred[None]) > natural + 15  # 63.0


def test_brisque_is_the_librarys_score_averaged_over_frames():
    """Our per-frame path skips score()'s unused first pass and numpy 2's failure inside the package; the
    number is the library's own (its scale_features given floats, which is all the numpy-2 fix changes)."""
    from brisque import BRISQUE

    class Library(BRISQUE):
        def scale_features(self, features):
            return super().scale_features([np.asarray(f, dtype=np.float64).item() for f in features])

    frames = np.stack([_one_over_f(64, 96, seed) for seed in (2, 3)])
    u8 = np.rint(frames * 255).astype(np.uint8)
    want = np.mean([Library(url=False).score(f) for f in u8])
    assert brisque(frames) == pytest.approx(want, abs=1e-9)


def test_brisque_skips_flat_frames_and_never_touches_the_network(monkeypatch):
    import requests

    def no_network(*args, **kwargs):
        raise AssertionError("BRISQUE tried the network")

    monkeypatch.setattr(requests, "get", no_network)
    monkeypatch.setattr(socket.socket, "connect", no_network)
    img = _one_over_f(64, 64)
    flat = np.full_like(img, 0.5)
    assert brisque(np.stack([img, flat])) == pytest.approx(brisque(img[None]))
    assert math.isnan(brisque(flat[None]))


def test_score_clip_with_target_motion_scores_the_perceptual_measures(texture):
    gt, blurred = texture["gt"], texture["blurred"]
    s = score_clip("x", blurred, gt, target_motion=vmaf_motion(gt))
    assert s.vmaf == pytest.approx(vmaf(blurred, gt)) and s.vmaf_neg == pytest.approx(vmaf_neg(blurred, gt))
    assert s.brisque == pytest.approx(brisque(blurred))
    plain = score_clip("x", blurred, gt)
    assert math.isnan(plain.vmaf) and math.isnan(plain.vmaf_neg) and math.isnan(plain.brisque)  # not asked for
    agg = Aggregate([s, SampleScore("y", 0.1, 0.5, vmaf=50.0, vmaf_neg=40.0, brisque=20.0), plain])
    assert agg.vmaf() == pytest.approx((s.vmaf + 50) / 2) and agg.vmaf_neg() == pytest.approx((s.vmaf_neg + 40) / 2)
    assert agg.brisque() == pytest.approx((s.brisque + 20) / 2)
