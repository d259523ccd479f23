"""model/precision.py: the precision policy, its hardware probe and reduced-precision weights."""

import pytest
import torch

import model.precision as precision
from model.precision import native_bf16, resolve_precision


def test_precision_names_are_checked():
    assert resolve_precision("fp32", "cpu") == "fp32"
    with pytest.raises(ValueError, match="precision must be one of"):
        resolve_precision("int4", "cpu")


@pytest.mark.parametrize("device", ["cpu", "cuda"])
@pytest.mark.parametrize("native,expected", [(True, "bf16"), (False, "fp32")])
def test_auto_precision_is_bf16_exactly_where_the_device_runs_it_natively(monkeypatch, device, native, expected):
    asked = []
    monkeypatch.setattr(precision, "native_bf16", lambda d: asked.append(torch.device(d)) or native)
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


def test_reduced_precision_is_a_copy_with_reduced_parameters_and_float_buffers():
    from model.frvsr_spynet import FRVSRSpyNet
    from model.precision import reduced_precision

    model = FRVSRSpyNet().eval()
    half = reduced_precision(model, "bf16")
    assert half is not model
    assert all(p.dtype == torch.float32 for p in model.parameters())  # the caller's model is untouched
    assert all(p.dtype == torch.bfloat16 for p in half.parameters())
    assert half.fnet.spynet.mean.dtype == torch.float32  # buffers keep their type (ImageNet statistics)
    assert reduced_precision(half, "bf16") is half  # already prepared: used as it is
    assert reduced_precision(model, "fp32") is model
