"""train/evaluate.py: a paired checkpoint is scored as it is served (the variant chosen per upload); client_test's
conditions with the perceptual measures, into its workbook and trial.txt."""

from __future__ import annotations

import json
import math

import pytest
from openpyxl import load_workbook

from model.frvsr import FRVSRConfig
from model.variants import CLEAN, COMPRESSED, InputRule, ModelSet
from testing.clips import moving_clip
from testing.helpers import random_frvsr, write_clip
from train.data import discover_samples
from train.evaluate import evaluate_clips, evaluate_conditions
from train.report import GROUND_TRUTH, PER_SAMPLE_COLUMNS, SUMMARY_COLUMNS, write_test_results

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


def test_conditions_with_perceptual_measures_reach_the_workbook_not_trial_txt(tmp_path, monkeypatch, tiny_model):
    for i in range(2):
        write_clip(tmp_path / "data" / f"clip_{i}", moving_clip(4, 64, 64, dx=1, dy=i, seed=i, grain=8))
    samples = discover_samples(tmp_path / "data", min_frames=2)
    scored = []  # the ground truth's BRISQUE: once per clip, not once per condition
    monkeypatch.setattr("train.evaluate.brisque", lambda frames: scored.append(len(frames)) or 20.0 + len(scored))
    runs = evaluate_conditions(tiny_model, samples, "bicubic", "cpu", [30], with_perceptual=True)
    assert scored == [4, 4]
    assert [r.gt_brisque for r in runs[None]] == [r.gt_brisque for r in runs[30]] == [21.0, 22.0]
    for r in runs[None] + runs[30]:
        for s in (r.model, r.bicubic):
            assert 0 <= s.vmaf <= 100 and 0 <= s.vmaf_neg <= 100 and s.brisque > 0

    monkeypatch.setenv("FRVSR_RUNS_DIR", str(tmp_path / "runs"))
    xlsx, summaries = write_test_results(tmp_path / "runs" / "models" / "u", runs, {}, 1.0, 0)
    assert summaries[None][GROUND_TRUTH] == {"BRISQUE": 21.5}
    trial = json.loads((tmp_path / "runs" / "metric" / "trial.txt").read_text())
    assert set(trial["test_result"]) == {"FRVSR_GAN", "Bicubic"}  # the platform's contract, unchanged
    assert all(set(c) == {"MSE", "SSIMs", "PSNR", "SSIM"} for v in trial["test_result"].values() for c in v.values())

    wb = load_workbook(xlsx)
    head, *rows = list(wb["per_sample"].values)
    assert list(head) == PER_SAMPLE_COLUMNS
    for col in ("VMAF", "VMAF_NEG", "BRISQUE", "bicubic VMAF", "bicubic VMAF_NEG", "bicubic BRISQUE"):
        assert all(isinstance(r[head.index(col)], float) for r in rows)
    assert [r[head.index("ground truth BRISQUE")] for r in rows] == [21.0, 22.0]
    for sheet in ("summary", "h264_crf30"):
        table = {r[0]: r for r in wb[sheet].values if r and r[0] in ("FRVSR_GAN", "Bicubic", GROUND_TRUTH)}
        vmaf_col, brisque_col = SUMMARY_COLUMNS.index("VMAF"), SUMMARY_COLUMNS.index("BRISQUE")
        assert table["FRVSR_GAN"][vmaf_col] == pytest.approx(
            summaries[None if sheet == "summary" else 30]["FRVSR_GAN"]["VMAF"], abs=1e-4
        )
        assert table[GROUND_TRUTH][brisque_col] == 21.5 and not any(table[GROUND_TRUTH][1:brisque_col])


def test_conditions_without_perceptual_measures_leave_them_nan(tmp_path, tiny_model):
    write_clip(tmp_path / "clip", moving_clip(3, 32, 32))
    runs = evaluate_conditions(tiny_model, discover_samples(tmp_path, min_frames=2), "bicubic", "cpu", [])
    r = runs[None][0]
    assert math.isnan(r.model.vmaf) and math.isnan(r.bicubic.brisque) and math.isnan(r.gt_brisque)


def test_a_post_filter_is_scored_in_place_of_the_models_output_and_bicubic_is_untouched(tmp_path, tiny_model):
    write_clip(tmp_path / "clip", moving_clip(3, 32, 32))
    samples = discover_samples(tmp_path, min_frames=2)
    plain = evaluate_conditions(tiny_model, samples, "bicubic", "cpu", [])[None][0]
    dark = evaluate_conditions(tiny_model, samples, "bicubic", "cpu", [], post=lambda out: out // 4)[None][0]
    assert dark.model.psnr < plain.model.psnr - 3
    assert dark.bicubic.psnr == plain.bicubic.psnr
