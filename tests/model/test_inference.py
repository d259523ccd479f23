"""model/inference.py: the precision policy and its hardware probe."""

import pytest
import torch

import model.inference as inference
from model.inference import native_bf16, resolve_precision


def test_precision_names_are_checked():
    assert resolve_precision("fp32", "cpu") == "fp32"
    with pytest.raises(ValueError, match="precision must be one of"):
        resolve_precision("int4", "cpu")


@pytest.mark.parametrize("device", ["cpu", "cuda"])
@pytest.mark.parametrize("native,expected", [(True, "bf16"), (False, "fp32")])
def test_auto_precision_is_bf16_exactly_where_the_device_runs_it_natively(monkeypatch, device, native, expected):
    asked = []
    monkeypatch.setattr(inference, "native_bf16", lambda d: asked.append(torch.device(d)) or native)
    assert resolve_precision("auto", device) == expected
    assert asked == [torch.device(device)]
    for fixed in ("fp32", "bf16", "fp16"):
        assert resolve_precision(fixed, device) == fixed  # only auto asks the hardware
    assert len(asked) == 1


@pytest.mark.parametrize("avx512_bf16,amx,native", [(False, False, False), (True, False, True), (False, True, True)])
def test_native_bf16_on_cpu_means_avx512_bf16_or_amx(monkeypatch, avx512_bf16, amx, native):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx, raising=False)
    assert native_bf16("cpu") is native


@pytest.mark.parametrize("available,bf16,native", [(False, True, False), (True, False, False), (True, True, True)])
def test_native_bf16_on_cuda_needs_a_gpu_that_supports_it(monkeypatch, available, bf16, native):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: available)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16)
    assert native_bf16("cuda:0") is native
    assert native_bf16("meta") is False  # any other device: fp32


def test_time_super_resolve_times_the_frames_after_the_warm_up(tiny_model):
    import numpy as np

    from model.inference import time_super_resolve

    frames = [np.zeros((8, 8, 3), np.uint8)] * 3
    assert time_super_resolve(tiny_model, frames, precision="fp32") > 0
    with pytest.raises(ValueError, match="more than 1"):
        time_super_resolve(tiny_model, frames[:1])


def test_reduced_precision_is_a_copy_with_reduced_parameters_and_float_buffers():
    from model.frvsr_spynet import FRVSRSpyNet
    from model.inference import reduced_precision

    model = FRVSRSpyNet().eval()
    half = reduced_precision(model, "bf16")
    assert half is not model
    assert all(p.dtype == torch.float32 for p in model.parameters())  # the caller's model is untouched
    assert all(p.dtype == torch.bfloat16 for p in half.parameters())
    assert half.fnet.spynet.mean.dtype == torch.float32  # buffers keep their type (ImageNet statistics)
    assert reduced_precision(half, "bf16") is half  # already prepared: used as it is
    assert reduced_precision(model, "fp32") is model


def test_bf16_weights_give_what_fp32_weights_under_autocast_gave():
    """The shipped default (a random model amplifies any rounding through its random flow: not a fair probe)."""
    import numpy as np

    from common.paths import DEFAULT_MODEL
    from model.checkpoint import load_checkpoint
    from model.inference import super_resolve, to_tensor
    from testing.clips import moving_clip

    model, _ = load_checkpoint(DEFAULT_MODEL)
    clip = moving_clip(5, 40, 48, dx=1, dy=1, seed=2)
    now = np.stack(list(super_resolve(model, clip, precision="bf16", cut_threshold=None))).astype(float)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        before = [hr for hr, _ in model.iterate(to_tensor(f)[None] for f in clip)]
    before = np.stack([inference.to_uint8(hr) for hr in before]).astype(float)
    psnr = 10 * np.log10(255**2 / np.mean((now - before) ** 2))
    assert psnr > 45, f"bf16 weights vs autocast: {psnr:.1f} dB apart"
    assert all(p.dtype == torch.float32 for p in model.parameters())


def test_flow_ahead_gives_exactly_the_frames_of_the_flow_in_line(tiny_cfg):
    import numpy as np

    from model.inference import super_resolve
    from testing.clips import moving_clip
    from testing.helpers import random_frvsr

    model = random_frvsr(tiny_cfg, seed=5).eval()
    clip = np.concatenate([moving_clip(5, 24, 32, dx=1, dy=0, seed=1), moving_clip(4, 24, 32, dx=0, dy=1, seed=9)])
    in_line = list(super_resolve(model, clip, precision="fp32", cut_threshold=0.05))
    for depth in (1, 3):
        assert all(np.array_equal(a, b) for a, b in zip(
            in_line, super_resolve(model, clip, precision="fp32", cut_threshold=0.05, flow_ahead=depth), strict=True
        ))  # fmt: skip
