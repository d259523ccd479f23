"""bench/studies/variants.py's scoring: the same decoded frames to bicubic and each model, gains in dB over bicubic."""

from bench.studies.variants import score
from model.checkpoint import save_checkpoint
from model.frvsr import FRVSR
from testing.clips import moving_clip
from testing.helpers import random_frvsr, write_clip


def test_a_fresh_model_gains_nothing_over_bicubic_and_a_changed_one_does(tmp_path, tiny_cfg):
    root = tmp_path / "list"
    for i in range(2):
        write_clip(root / f"clip_{i}", moving_clip(4, 32, 64, dx=1, dy=1, seed=i))  # low-res 8x16: no padding
    (root / "sep_testlist.txt").write_text("clip_0\nclip_1\n")
    save_checkpoint(tmp_path / "fresh.pth", FRVSR(tiny_cfg))  # a fresh model starts at bicubic
    save_checkpoint(tmp_path / "changed.pth", random_frvsr(tiny_cfg, seed=1))  # every layer random: far off
    gains = score({"fresh": tmp_path / "fresh.pth", "changed": tmp_path / "changed.pth"}, (23,), {"t": root})
    assert set(gains["fresh"]) == {"t clean", "t crf23"}
    assert abs(gains["fresh"]["t clean"]) < 0.01 and abs(gains["fresh"]["t crf23"]) < 0.01
    assert gains["changed"]["t clean"] < -1.0
