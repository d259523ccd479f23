"""model/variants.py: one checkpoint holding a clean-input and a compressed-input model, and the choice."""

from __future__ import annotations

import pytest
import torch

from model.checkpoint import load_checkpoint, save_checkpoint
from model.commands import main
from model.frvsr import FRVSRConfig
from model.variants import CLEAN, COMPRESSED, InputRule, load_model_set, pair
from testing.helpers import random_frvsr
from wire.payload import INPUT_QUALITIES

TINY = FRVSRConfig(channels=8, blocks=1, fnet_channels=4, hidden=4)


@pytest.mark.parametrize(
    "codec, bpp, expected",
    [
        (None, None, CLEAN),  # frames handed over in-process: the platform's clean input
        ("ffv1", 0.2, CLEAN),  # lossless whatever its rate
        ("rawvideo", None, CLEAN),
        ("h264", 0.3, COMPRESSED),
        ("h264", None, COMPRESSED),  # a lossy codec with no known rate
        ("h264", 2.0, CLEAN),  # near-lossless
        ("mjpeg", 1.49, COMPRESSED),
    ],
)
def test_rule_chooses_from_codec_and_bits_per_pixel(codec, bpp, expected):
    assert InputRule(clean_min_bpp=1.5).choose(codec, bpp) == expected


def test_request_values_are_the_variant_names():
    assert INPUT_QUALITIES == ("auto", CLEAN, COMPRESSED)


def test_pair_holds_both_models_and_plain_loaders_see_the_clean_one(tmp_path):
    clean, comp = random_frvsr(TINY, seed=1), random_frvsr(TINY, seed=2)
    save_checkpoint(tmp_path / "clean.pth", clean, step=10, cpu_seconds=100.0)
    save_checkpoint(tmp_path / "comp.pth", comp, step=20, cpu_seconds=160.0)
    argv = ["pair", str(tmp_path / "clean.pth"), str(tmp_path / "comp.pth"), str(tmp_path / "p.pth")]
    assert main([*argv, "--clean_min_bpp", "0.9"]) == 0
    models, ckpt = load_model_set(tmp_path / "p.pth")
    assert models.paired and models.rule == InputRule(0.9)
    assert ckpt["variants"][COMPRESSED]["step"] == 20 and ckpt["step"] == 10
    for name, ref in ((CLEAN, clean), (COMPRESSED, comp)):
        net = models.models[name]
        assert not net.training
        for k, v in ref.state_dict().items():
            assert torch.equal(net.state_dict()[k], v), (name, k)
    plain, _ = load_checkpoint(tmp_path / "p.pth")
    assert all(torch.equal(plain.state_dict()[k], v) for k, v in clean.state_dict().items())
    assert models.pick("h264", 0.2)[0] == COMPRESSED and models.pick("h264", 0.2, CLEAN)[0] == CLEAN
    assert models.pick(None, None)[1] is models.models[CLEAN]


def test_unpair_gives_back_each_model_with_its_own_run(tmp_path):
    clean, comp = random_frvsr(TINY, seed=1), random_frvsr(TINY, seed=2)
    save_checkpoint(tmp_path / "clean.pth", clean, step=10, cpu_seconds=100.0)
    save_checkpoint(tmp_path / "comp.pth", comp, step=20, cpu_seconds=160.0)
    assert main(["pair", str(tmp_path / "clean.pth"), str(tmp_path / "comp.pth"), str(tmp_path / "p.pth")]) == 0
    for name, ref, step in ((CLEAN, clean, 10), (COMPRESSED, comp, 20)):
        assert main(["unpair", str(tmp_path / "p.pth"), name, str(tmp_path / f"{name}.out.pth")]) == 0
        net, ckpt = load_checkpoint(tmp_path / f"{name}.out.pth")
        assert "variants" not in ckpt and "input_rule" not in ckpt and ckpt["step"] == step
        assert all(torch.equal(net.state_dict()[k], v) for k, v in ref.state_dict().items()), name
    assert main(["unpair", str(tmp_path / "clean.pth"), CLEAN, str(tmp_path / "x.pth")]) == 2  # nothing to unpair


def test_a_single_checkpoint_serves_every_input_with_its_one_model(tmp_path):
    save_checkpoint(tmp_path / "one.pth", random_frvsr(TINY))
    models, _ = load_model_set(tmp_path / "one.pth")
    assert not models.paired
    quality, net = models.pick("h264", 0.1)
    assert quality == COMPRESSED and net is models.models[CLEAN]


def test_pair_refuses_different_architectures_and_nested_pairs(tmp_path):
    save_checkpoint(tmp_path / "a.pth", random_frvsr(TINY))
    save_checkpoint(tmp_path / "b.pth", random_frvsr(FRVSRConfig(channels=12, blocks=1, fnet_channels=4, hidden=4)))
    with pytest.raises(ValueError, match="model_args differs"):
        pair(tmp_path / "a.pth", tmp_path / "b.pth", tmp_path / "p.pth", InputRule())
    pair(tmp_path / "a.pth", tmp_path / "a.pth", tmp_path / "p.pth", InputRule())
    with pytest.raises(ValueError, match="already holds variants"):
        pair(tmp_path / "p.pth", tmp_path / "a.pth", tmp_path / "q.pth", InputRule())


def test_blends_take_the_rates_between_the_two_models():
    rule = InputRule(clean_min_bpp=1.5, blends=[[0.4, 0.25], (0.8, 0.5)])  # a checkpoint's lists, any order
    assert rule.blends == ((0.8, 0.5), (0.4, 0.25))
    for bpp, expected in ((2.0, CLEAN), (1.49, "blend50"), (0.8, "blend50"), (0.79, "blend25"), (0.39, COMPRESSED)):
        assert rule.choose("h264", bpp) == expected, bpp
    assert rule.choose("h264", None) == COMPRESSED and rule.choose("ffv1", 0.1) == CLEAN
    for bad in ([(0.5, 1.0)], [(1.6, 0.5)], [(0.5, 0.5), (0.6, 0.5)]):
        with pytest.raises(ValueError, match="blend"):
            InputRule(blends=bad)


def test_a_blend_is_the_interpolated_network_and_rule_rewrites_a_pair(tmp_path):
    clean, comp = random_frvsr(TINY, seed=1), random_frvsr(TINY, seed=2)
    save_checkpoint(tmp_path / "clean.pth", clean)
    save_checkpoint(tmp_path / "comp.pth", comp)
    argv = ["pair", str(tmp_path / "clean.pth"), str(tmp_path / "comp.pth"), str(tmp_path / "p.pth")]
    assert main([*argv, "--blend", "0.6:0.75"]) == 0
    models, _ = load_model_set(tmp_path / "p.pth")
    assert sorted(models.models) == sorted([CLEAN, "blend75", COMPRESSED])
    quality, net = models.pick("h264", 1.0)
    assert quality == "blend75" and not net.training
    for k, v in clean.state_dict().items():
        torch.testing.assert_close(net.state_dict()[k], 0.75 * v + 0.25 * comp.state_dict()[k])
    assert models.pick("h264", 1.0, COMPRESSED)[0] == COMPRESSED  # a request's override still wins
    assert main(["rule", str(tmp_path / "p.pth"), str(tmp_path / "r.pth"), "--blend", "0.3:0.5", "0.9:0.8"]) == 0
    models, _ = load_model_set(tmp_path / "r.pth")
    assert sorted(models.models) == sorted([CLEAN, "blend50", "blend80", COMPRESSED])
    assert main(["rule", str(tmp_path / "clean.pth"), str(tmp_path / "x.pth")]) == 2  # one model: nothing to blend
    with pytest.raises(SystemExit):  # argparse: the usage and the message, exit 2
        main([*argv, "--blend", "half"])
