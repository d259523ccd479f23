"""model/quantize.py and train/calibrate.py: int8 SRNet, where it runs, and the fall-back when it cannot."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from model.checkpoint import INT8
from model.frvsr import FRVSRConfig
from model.quantize import int8_unavailable, serving_precision
from testing.clips import moving_clip
from testing.helpers import random_frvsr

# asked when a test that needs int8 runs, not at collection: the probe imports torchao (about 2 s)
needs_int8 = pytest.mark.usefixtures("int8_here")
CFG = FRVSRConfig(channels=16, blocks=2, fnet_channels=4, hidden=4)


@pytest.fixture
def int8_here() -> None:
    """Skips the test where int8 cannot run, saying why."""
    why = int8_unavailable()
    if why is not None:
        pytest.skip(f"int8 cannot run here: {why}")


def _ckpt(variants=("clean",), torch_version: str | None = None) -> dict:
    made = str(torch.__version__) if torch_version is None else torch_version
    return {INT8: {v: {"programs": {"srnet": b"x"}, "torch": made} for v in variants}}


@pytest.mark.parametrize("isa", ["AVX2", "avx512_core"])
def test_oneDNN_held_below_vnni_means_no_int8(monkeypatch, isa):
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", isa)
    assert "ONEDNN_MAX_CPU_ISA" in int8_unavailable()


def test_auto_falls_back_to_bf16_or_fp32_and_says_why(monkeypatch):
    from model.precision import resolve_precision

    plain = resolve_precision("auto", "cpu")
    resolved, why = serving_precision("auto", "cpu", {}, ["clean"])
    assert resolved == plain and "no int8 program for ['clean']" in why and "train.calibrate" in why
    resolved, why = serving_precision("auto", "cpu", _ckpt(), ["clean", "compressed"])
    assert resolved == plain and "['compressed']" in why
    resolved, why = serving_precision("auto", "cpu", _ckpt(torch_version="1.0"), ["clean"])
    assert resolved == plain and "made with torch ['1.0']" in why
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    resolved, why = serving_precision("auto", "cpu", _ckpt(), ["clean"])
    assert resolved == plain and "ONEDNN_MAX_CPU_ISA=AVX2" in why
    with pytest.raises(ValueError, match="--precision int8 cannot run: ONEDNN_MAX_CPU_ISA"):
        serving_precision("int8", "cpu", _ckpt(), ["clean"])
    assert serving_precision("fp32", "cpu", _ckpt(), ["clean"]) == ("fp32", "requested")


@needs_int8
def test_auto_is_int8_where_the_cpu_and_the_checkpoint_allow_it():
    assert serving_precision("auto", "cpu", _ckpt(), ["clean"])[0] == "int8"


def test_int8_needs_a_prepared_model(tiny_model):
    from model.inference import super_resolve

    with pytest.raises(ValueError, match="model.quantize.prepare"):
        list(super_resolve(tiny_model, [np.zeros((8, 8, 3), np.uint8)], precision="int8"))


@pytest.mark.slow
@needs_int8
@pytest.mark.parametrize("backward", [0, 4])
def test_calibrated_int8_follows_bf16_at_any_size_after_one_compile(backward):
    from model.inference import super_resolve, to_tensor
    from model.quantize import prepare, quantize

    model = random_frvsr(FRVSRConfig(**{**vars(CFG), "backward": backward}), seed=1).eval()
    calib = [moving_clip(6, 48, 64, dx=1, dy=1, seed=s) for s in range(3)]

    def run(observed):
        with torch.no_grad():
            for clip in calib:
                list(observed.iterate(to_tensor(f)[None] for f in clip))

    programs = quantize(model, run)
    assert set(programs) == ({"srnet", "bnet"} if backward else {"srnet"})  # the backward cell int8 too
    int8 = prepare(model, "int8", programs)
    assert all(p.dtype == torch.float32 for p in model.parameters())  # the caller's model is untouched
    for h, w in ((48, 64), (40, 56), (24, 32)):  # a new size after the first two compiles nothing new
        clip = moving_clip(4, h, w, dx=1, dy=0, seed=7)
        ref = np.stack(list(super_resolve(model, clip, precision="bf16"))).astype(float)
        got = np.stack(list(super_resolve(int8, clip, precision="int8"))).astype(float)
        assert got.shape == ref.shape == (4, 4 * h, 4 * w, 3)
        psnr = 10 * np.log10(255**2 / np.mean((got - ref) ** 2))
        assert psnr > 30, f"{h}x{w}: int8 {psnr:.1f} dB from bf16"
        assert not np.array_equal(got, ref)  # int8 really ran


@pytest.mark.slow
@needs_int8
def test_calibrate_writes_programs_the_handler_serves_and_falls_back_without(tmp_path, monkeypatch, caplog):
    from handler.upscaler import Upscaler
    from model.checkpoint import save_checkpoint
    from model.variants import load_model_set
    from testing.helpers import write_clip
    from train.calibrate import main
    from video.settings import HandlerSettings

    for i in range(3):
        write_clip(tmp_path / "data" / f"clip_{i}", moving_clip(8, 64, 64, dx=1, dy=1, seed=i))
    save_checkpoint(tmp_path / "m.pth", random_frvsr(CFG, seed=2))
    assert main([str(tmp_path / "m.pth"), "--data", str(tmp_path / "data"), "--clips", "2", "--frames", "4"]) == 0
    _, ckpt = load_model_set(tmp_path / "m.pth")
    assert set(ckpt[INT8]) == {"clean"} and set(ckpt[INT8]["clean"]["programs"]) == {"srnet"}
    assert ckpt[INT8]["clean"]["keep_float"] == {"srnet": ["head", "upsample"]}

    settings = HandlerSettings(torch_threads=1)
    with caplog.at_level(logging.INFO, logger="handler.upscaler"):
        served = Upscaler(tmp_path / "m.pth", settings, torch.device("cpu"), 1, "m")
        monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")  # as on a CPU without VNNI
        fallback = Upscaler(tmp_path / "m.pth", settings, torch.device("cpu"), 1, "m")
    assert served.precision == "int8"
    assert fallback.precision in ("bf16", "fp32")
    assert "not int8: ONEDNN_MAX_CPU_ISA=AVX2" in caplog.text


@pytest.mark.slow
@needs_int8
def test_client_test_scores_what_the_server_runs(tmp_path, monkeypatch):
    """``client_test.py``: its default is the server's choice (int8 here), ``--precision int8`` scores the int8
    network the handler serves, ``--precision bf16`` another one."""
    import json

    import client_test
    from handler.upscaler import Upscaler
    from model.checkpoint import save_checkpoint
    from testing.helpers import write_clip
    from train.calibrate import main as calibrate
    from train.evaluate import evaluate_clips, test_samples
    from train.report import summarize
    from video.settings import HandlerSettings

    for i in range(2):
        write_clip(tmp_path / "data" / f"clip_{i}", moving_clip(8, 64, 64, dx=1, dy=1, seed=i))
    save_checkpoint(tmp_path / "m.pth", random_frvsr(CFG, seed=2))
    assert calibrate([str(tmp_path / "m.pth"), "--data", str(tmp_path / "data"), "--clips", "2", "--frames", "4"]) == 0
    monkeypatch.setenv("FRVSR_RUNS_DIR", str(tmp_path / "runs"))

    def psnr(*extra: str) -> float:
        argv = ["--dataset_path", str(tmp_path / "data"), "--model_path", str(tmp_path), "--used_model", "m.pth"]
        assert client_test.main([*argv, "--crf", *extra]) == 0
        trial = json.loads((tmp_path / "runs" / "metric" / "trial.txt").read_text())
        return trial["test_result"]["FRVSR_GAN"]["test"]["PSNR"]

    served = Upscaler(tmp_path / "m.pth", HandlerSettings(torch_threads=1), torch.device("cpu"), 1, "m")
    assert served.precision == "int8"
    samples = test_samples(tmp_path / "data")
    results = evaluate_clips(served.models, samples, with_bicubic=True, precision=served.precision)
    expected = round(summarize(list(results))["FRVSR_GAN"]["PSNR"], 4)
    assert psnr() == psnr("--precision", "int8") == expected
    assert psnr("--precision", "bf16") != expected


def test_a_checkpoint_with_rep_blocks_is_served_as_plain_convolutions(tmp_path):
    from model.checkpoint import save_checkpoint
    from model.frvsr import FRVSR, RepConv
    from model.inference import super_resolve
    from model.quantize import load_for_serving

    model = FRVSR(FRVSRConfig(channels=8, blocks=2, fnet_channels=4, hidden=4, block="rep")).eval()
    with torch.no_grad():
        for p in model.srnet.parameters():
            p.copy_(torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())) * 0.1)
    save_checkpoint(tmp_path / "rep.pth", model)
    served, precision, _ = load_for_serving(tmp_path / "rep.pth", "fp32")
    net = served.models["clean"]
    assert precision == "fp32" and net.cfg.block == "plain"
    assert not any(isinstance(m, RepConv) for m in net.modules())
    clip = moving_clip(3, 16, 24, dx=1, dy=0, seed=0)
    want = np.stack(list(super_resolve(model, clip, precision="fp32")))
    got = np.stack(list(super_resolve(net, clip, precision="fp32")))
    assert np.abs(want.astype(int) - got.astype(int)).max() <= 1  # 8-bit output: rounding at most
