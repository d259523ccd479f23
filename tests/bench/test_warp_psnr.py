"""bench/warp_psnr.py: warp PSNR and its edge cases (identity, a known shift, the border, the mean of lists)."""

import math

import numpy as np
import pytest
import torch

from bench.warp_psnr import clip_warp_psnr, evaluate, pair_psnr, zero_flow
from model.inference import to_tensor
from testing.clips import moving_clip


def test_identical_frames_with_zero_flow_are_infinite():
    x = torch.rand(2, 3, 20, 24)
    assert pair_psnr(x, x, zero_flow(x, x)) == [math.inf, math.inf]


def test_a_known_shift_is_undone_by_its_flow_and_not_by_others():
    clip = to_tensor(moving_clip(2, 32, 40, dx=1, dy=-1, seed=0))  # (2, 3, 32, 40): frame 1 = frame 0 moved
    prev, cur = clip[:1], clip[1:]
    right = torch.tensor([1.0, -1.0]).view(1, 2, 1, 1).expand(1, 2, 32, 40)
    exact, still = pair_psnr(prev, cur, right)[0], pair_psnr(prev, cur, zero_flow(cur, prev))[0]
    wrong = pair_psnr(prev, cur, -right)[0]
    assert exact > 100  # float rounding only: the 4-pixel border removes the clamped edge
    assert still < exact - 50 and wrong < still


def test_pair_psnr_leaves_the_border_out():
    prev = torch.rand(1, 3, 16, 16)
    cur = prev.clone()
    cur[..., :4, :] = 0  # a difference only inside the 4-pixel border
    assert pair_psnr(prev, cur, zero_flow(cur, prev)) == [math.inf]
    assert pair_psnr(prev, cur, zero_flow(cur, prev), border=3)[0] < 100
    with pytest.raises(ValueError):
        pair_psnr(prev[..., :8, :8], cur[..., :8, :8], zero_flow(cur, prev)[..., :8, :8])


def test_evaluate_means_the_pairs_of_every_list():
    clip = moving_clip(4, 24, 24, dx=1, dy=1, seed=1)
    per_pair = clip_warp_psnr(zero_flow, clip)
    assert len(per_pair) == 3 and all(math.isfinite(p) for p in per_pair)
    still = np.repeat(clip[:1], 3, axis=0)
    scores = evaluate(zero_flow, {"a": [("c", clip)], "b": [("s", still)]})
    assert scores["a"] == pytest.approx(np.mean(per_pair)) and scores["b"] == math.inf
