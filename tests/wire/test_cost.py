"""wire/cost.py: the cost model (a clip's seconds from its frames and size) and the time limits that follow."""

from __future__ import annotations

import pytest

from wire.cost import Clip, ClipTimes, FrameCost, clip_timeout, frame_cost, request_timeout


def test_frame_cost_from_two_frame_areas_recovers_the_per_frame_and_per_pixel_cost():
    truth = FrameCost(0.004, 3e-7)
    area = 640 * 480
    cost = frame_cost(truth.at(area), truth.at(area // 4), area)
    assert cost == pytest.approx(truth)
    assert cost.at(176 * 144) == pytest.approx(0.004 + 3e-7 * 176 * 144)
    # a quarter-area frame timed slower than the full one (noise): no negative cost per pixel
    assert frame_cost(0.1, 0.2, area) == (0.1, 0.0)


def test_clip_timeout_covers_the_largest_clip():
    assert clip_timeout(0.5, 300) >= 2 * 0.5 * 300  # twice the model time of the worst clip
    assert clip_timeout(0.5, 300) == 360  # + 60 s for decode and encode
    assert clip_timeout(0.001, 300) == 120  # never below two minutes


def test_request_timeout_waits_for_every_clip_ahead_on_the_workers():
    # 2 with the model server + 32 waiting, on 1 worker: 34 clips at 120 s each, + 30 s
    assert request_timeout(120, 2, 32, 1) == 34 * 120 + 30
    assert request_timeout(120, 3, 4, 2) == 4 * 120 + 30  # 7 clips on 2 workers: 4 rounds
    assert request_timeout(120, 3, 4, 0) == request_timeout(120, 3, 4, 1)  # no workers counts as one


def test_clip_times_learn_a_per_clip_a_per_frame_and_a_per_pixel_cost():
    clips = [Clip(10, 4096), Clip(40, 25440), Clip(30, 32768), Clip(10, 14400)]
    # before any clip: the start-up measurement (the model at two frame sizes); after one: its shape, scaled
    model_only = lambda c: 0.01 * c.frames + 2e-6 * c.frames * c.pixels  # noqa: E731
    times = ClipTimes(frame_cost_hint=(0.02, 4e-6))  # the right shape, twice too slow (another load)
    assert times.estimate(Clip(10, 1000)) == pytest.approx(10 * (0.02 + 4e-3))
    times.add(model_only(clips[0]), clips[0])
    assert times.estimate(clips[1]) == pytest.approx(model_only(clips[1]))
    # from three clips of different sizes on: every cost, the per-clip one too
    truth = lambda c: 0.3 + model_only(c)  # noqa: E731
    times = ClipTimes(frame_cost_hint=(0.02, 4e-6))
    for c in clips:
        times.add(truth(c), c)
    assert times.coefficients() == pytest.approx((0.3, 0.01, 2e-6), rel=1e-6)
    assert times.estimate(Clip(150, 40000)) == pytest.approx(truth(Clip(150, 40000)), rel=1e-6)
    assert times.per_frame(176 * 144) == pytest.approx(0.01 + 2e-6 * 176 * 144)


def test_clip_times_without_samples_or_a_hint_have_no_estimate():
    assert ClipTimes().estimate(Clip(10, 100)) is None and ClipTimes().per_frame(100) is None
