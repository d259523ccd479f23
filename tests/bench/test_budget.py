"""bench/budget.py: the served pipeline's per-frame budget, on a tiny random model and a tiny clip."""

from __future__ import annotations

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
