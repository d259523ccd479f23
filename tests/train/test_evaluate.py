"""train/evaluate.py: a paired checkpoint is scored as it is served (the variant chosen per upload)."""

from __future__ import annotations

import pytest

from model.frvsr import FRVSRConfig
from model.variants import CLEAN, COMPRESSED, InputRule, ModelSet
from testing.clips import moving_clip
from testing.helpers import random_frvsr, write_clip
from train.data import discover_samples
from train.evaluate import evaluate_clips

TINY = FRVSRConfig(channels=8, blocks=1, fnet_channels=4, hidden=4)


@pytest.fixture(scope="module")
def pair_set():
    return ModelSet({CLEAN: random_frvsr(TINY, 1).eval(), COMPRESSED: random_frvsr(TINY, 2).eval()}, InputRule(1.5))


def test_each_clip_gets_the_variant_its_upload_calls_for(tmp_path, pair_set):
    for i in range(2):  # 64x48 low-res: big enough for H.264's bits per pixel to mean what it does on real clips
        write_clip(tmp_path / f"clip_{i}", moving_clip(5, 192, 256, dx=4, dy=i, seed=i, grain=16))
    samples = discover_samples(tmp_path, min_frames=2)
    clean = list(evaluate_clips(pair_set, samples))
    h264 = list(evaluate_clips(pair_set, samples, crf=30))
    forced = list(evaluate_clips(pair_set, samples, crf=30, input_quality=CLEAN))
    assert [r.input_quality for r in clean] == [CLEAN, CLEAN] and clean[0].bits_per_pixel is None
    assert [r.input_quality for r in h264] == [COMPRESSED, COMPRESSED]
    assert all(0 < r.bits_per_pixel < 1.5 for r in h264)
    assert [r.input_quality for r in forced] == [CLEAN, CLEAN]
    assert h264[0].model.psnr != forced[0].model.psnr  # the same decoded frames, two different models
