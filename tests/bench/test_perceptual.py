"""bench.perceptual: the unsharp baseline a GAN has to beat, and its table."""

import numpy as np

from bench.perceptual import CONDITIONS, MEASURES, markdown, unsharp


def test_unsharp_mask_keeps_flat_frames_and_raises_edge_contrast():
    flat = np.full((2, 16, 16, 3), 120, np.uint8)
    assert np.array_equal(unsharp(flat, 0.5), flat)
    step = np.zeros((1, 16, 16, 3), np.uint8)
    step[:, :, 8:] = 200
    sharp = unsharp(step, 0.5)
    assert np.array_equal(unsharp(step, 0.0), step)
    assert sharp[0, 0, 7, 0] == 0 and sharp[0, 0, 8, 0] > 200  # overshoot on the bright side, clipped on the dark
    assert sharp.dtype == np.uint8


def test_markdown_has_a_row_per_model_list_and_input():
    scores = {k: 1.0 for k in MEASURES}
    cond = {"model": {**scores, "VMAF": 93.456}, "bicubic": {**scores, "VMAF": 66.6}, "gt_BRISQUE": 20.0}
    rows = [{"name": n, "vsr_train": {c: cond for c in CONDITIONS}} for n in ("default", "gan (FRVSR_GAN)")]
    md = markdown(rows)
    assert "| gan (FRVSR_GAN) | vsr_train | crf23 | 1.000 | 93.46 | 1.00 | 1.00 | 1.000 | 66.60 | 20.00 |" in md
    assert md.count("| vsr_train |") == 4 and "| vimeo |" not in md
