"""bench/budget.py: the served pipeline's per-frame budget, on a tiny random model and a tiny clip."""

from __future__ import annotations

import argparse

import pytest

from bench import budget
from model.checkpoint import save_checkpoint
from video.settings import HandlerSettings

pytestmark = pytest.mark.skipif(not budget._TASKS.is_dir(), reason="per-thread CPU clocks come from /proc (Linux)")


@pytest.mark.parametrize("flow_ahead", [2, 0])
def test_every_row_is_there_and_the_rows_add_up_to_the_cores_times_the_wall(tmp_path, tiny_model, flow_ahead):
    save_checkpoint(tmp_path / "tiny.pth", tiny_model)
    settings = HandlerSettings(torch_threads=1, flow_ahead=flow_ahead)
    res = budget.run(tmp_path / "tiny.pth", ((40, 32),), frames=5, settings=settings, warm_frames=2)
    s = res["sizes"]["40x32"]
    rows = s["rows"]
    assert list(rows) == list(budget.ROWS)
    assert (s["frames"], s["width"], s["height"], s["flow_ahead"]) == (5, 40, 32, flow_ahead)
    for name, r in rows.items():
        assert r["core_ms"] >= 0, name  # encode (the process less the rest) too: the thread groups are disjoint
        assert r["wall_ms"] is None or 0 <= r["wall_ms"] <= rows["total"]["wall_ms"], name
    for name in ("decode", "flow", "warp + input assembly", "SRNet", "output", "encode"):
        assert rows[name]["core_ms"] > 0 and rows[name]["wall_ms"] > 0, name  # each piece was seen running
    busy = sum(rows[r]["core_ms"] for r in budget.BUSY)
    assert busy == pytest.approx(s["busy_core_ms"])
    assert busy + rows["idle"]["core_ms"] == pytest.approx(rows["total"]["core_ms"])
    assert rows["total"]["core_ms"] == pytest.approx(s["cores"] * s["wall_s"] * 1e3 / s["frames"])
    assert rows["total"]["wall_ms"] == pytest.approx(s["wall_s"] * 1e3 / s["frames"])
    table = budget.markdown(res)
    assert all(f"| {r} |" in table for r in budget.BUSY + ("idle",)) and "| **total** |" in table


def test_arms_are_served_in_interleaved_rounds_with_their_own_settings(tmp_path, tiny_model):
    save_checkpoint(tmp_path / "tiny.pth", tiny_model)
    arms = [
        budget.parse_arm(f"fast=model:{tmp_path / 'tiny.pth'},x264_preset:ultrafast,torch_threads:1"),
        budget.parse_arm(f"inline=model:{tmp_path / 'tiny.pth'},flow_ahead:0,torch_threads:1"),
    ]
    assert arms[1][2] == {"flow_ahead": 0, "torch_threads": 1}  # numbers parsed as numbers
    res = budget.compare(arms, ((40, 32),), frames=4, rounds=2)
    for name in ("fast", "inline"):
        a = res["arms"][name]["sizes"]["40x32"]
        assert len(a["wall_s"]) == 2 and all(t > 0 for t in a["wall_s"])
        assert list(a["core_ms"]) == list(budget.ROWS) and a["core_ms"]["total"] > 0
    assert res["arms"]["fast"]["settings"]["x264_preset"] == "ultrafast"
    table = budget.compare_markdown(res)
    assert "| fast | `tiny.pth`, x264_preset ultrafast, torch_threads 1 |" in table and "| encode |" in table
    with pytest.raises(argparse.ArgumentTypeError, match="x264_preset"):  # a bad setting fails before any warm-up
        budget.parse_arm("bad=x264_preset:warp9")
    with pytest.raises(argparse.ArgumentTypeError, match="NAME=key:value"):
        budget.parse_arm("nothing")
