"""bench.studies.gan: the unsharp baseline a GAN has to beat, and the study's table."""

import numpy as np

from bench.studies.gan import markdown, unsharp


def test_unsharp_mask_keeps_flat_frames_and_raises_edge_contrast():
    flat = np.full((2, 16, 16, 3), 120, np.uint8)
    assert np.array_equal(unsharp(flat, 0.5), flat)
    step = np.zeros((1, 16, 16, 3), np.uint8)
    step[:, :, 8:] = 200
    sharp = unsharp(step, 0.5)
    assert np.array_equal(unsharp(step, 0.0), step)
    assert sharp[0, 0, 7, 0] == 0 and sharp[0, 0, 8, 0] > 200  # overshoot on the bright side, clipped on the dark
    assert sharp.dtype == np.uint8


def test_markdown_lists_baselines_and_each_arms_last_validation():
    point = {
        "step": 0,
        "own_cpu_minutes": 0.0,
        "val_psnr": 25.0,
        "val_tof": 1.0,
        "val_vmaf": 50.0,
        "val_vmaf_neg": 49.0,
    }
    last = {**point, "step": 300, "own_cpu_minutes": 40.0, "val_vmaf": 53.25}
    res = {
        "start": "start.pth",
        "baselines": {"start": point, "start + unsharp 0.5": {**point, "val_vmaf": 52.0}},
        "arms": [{"arm": "B", "design": {"w_vmaf": 0.003}, "curve": [point, last], "last": last}],
    }
    md = markdown(res)
    assert "| start + unsharp 0.5 | | | | 25.000 | 1.0000 | 52.00 | 49.00 |" in md
    assert "| B | w_vmaf 0.003 | 300 | 40.0 | 25.000 | 1.0000 | 53.25 | 49.00 |" in md
