"""bench.studies.student: curves read off a run folder, and a study that keeps its earlier arms."""

import json

from bench.studies.student import main


def make_run(folder, name, psnrs, distill=None):
    folder.mkdir(parents=True)
    settings = {"trial_name": name, "channels": 48, "blocks": 8, "lr": 3e-4}
    if distill is not None:
        settings["distill"] = distill
    (folder / "settings.json").write_text(json.dumps(settings))
    history = [{"step": 0, "loss": 1.0}] + [
        {"step": 100 * (i + 1), "own_cpu_seconds": 900.0 * (i + 1), "val_psnr": v} for i, v in enumerate(psnrs)
    ]
    (folder / "history.json").write_text(json.dumps(history))
    return folder


def test_keep_carries_earlier_arms_and_a_new_arm_of_the_same_name_replaces_its_row(tmp_path):
    a = make_run(tmp_path / "a", "A", [27.0, 27.5, 27.75])
    first = tmp_path / "first"
    assert main(["--arm", f"A={a}", "--no_score", "--out", str(first)]) == 0
    saved = json.loads(first.with_suffix(".json").read_text())
    assert saved["arms"][0]["at"] == {"15": 27.0, "30": 27.5, "45": 27.75}

    b = make_run(tmp_path / "b", "B", [27.25, 27.5], distill=0.5)
    second = tmp_path / "second"
    assert main(["--keep", str(first.with_suffix(".json")), "--arm", f"B={b}", "--no_score", "--out", str(second)]) == 0
    res = json.loads(second.with_suffix(".json").read_text())
    assert [r["arm"] for r in res["arms"]] == ["A", "B"]
    assert res["arms"][1]["design"]["distill"] == 0.5
    assert res["arms"][1]["at"]["45"] is None  # B has not reached 45 minutes
    md = second.with_suffix(".md").read_text()
    assert "| A | channels 48, blocks 8, lr 0.0003 | 300 | 45.0 | 27.000 | 27.500 | 27.750 | 27.750 |" in md

    a2 = make_run(tmp_path / "a2", "A", [26.0])
    third = tmp_path / "third"
    keep = str(second.with_suffix(".json"))
    assert main(["--keep", keep, "--arm", f"A={a2}", "--no_score", "--out", str(third)]) == 0
    res = json.loads(third.with_suffix(".json").read_text())
    assert [(r["arm"], r["best"]) for r in res["arms"]] == [("B", 27.5), ("A", 26.0)]
