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
