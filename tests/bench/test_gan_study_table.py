"""bench.studies.gan: the study's table."""


from bench.studies.gan import markdown


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
