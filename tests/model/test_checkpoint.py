"""model/checkpoint.py: the arch table, checkpoints written before it, a second architecture, the one writer."""

import ast
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn

from model import checkpoint
from model.checkpoint import ARCHS, load_checkpoint, read_checkpoint, save_checkpoint, write_checkpoint
from model.frvsr import FRVSRConfig
from model.inference import super_resolve
from testing.helpers import random_frvsr

CLIP = [np.random.default_rng(i).integers(0, 256, (16, 24, 3), dtype=np.uint8) for i in range(3)]


def _out(model) -> np.ndarray:
    return np.stack(list(super_resolve(model, CLIP, precision="fp32")))


def test_checkpoints_name_their_architecture(tmp_path, tiny_cfg):
    model = random_frvsr(tiny_cfg)
    save_checkpoint(tmp_path / "m.pth", model, step=3)
    ckpt = torch.load(tmp_path / "m.pth", weights_only=True)
    assert ckpt["arch"] == "frvsr" and ckpt["model_args"]["hidden"] == tiny_cfg.hidden and ckpt["step"] == 3
    loaded, _ = load_checkpoint(tmp_path / "m.pth")
    assert np.array_equal(_out(loaded), _out(model.eval()))


@pytest.mark.parametrize("upsampler", ["pixelshuffle", "deconv"])
def test_a_checkpoint_from_before_the_arch_key_loads_as_the_same_frvsr(tmp_path, upsampler):
    cfg = FRVSRConfig(channels=8, blocks=1, fnet_channels=4, upsampler=upsampler, hidden=0)
    model = random_frvsr(cfg).eval()
    old = "srnet.tail.0." if upsampler == "pixelshuffle" else "srnet.tail."
    state = {
        (old + k[len("srnet.upsample.") :] if k.startswith("srnet.upsample.") else k): v
        for k, v in model.state_dict().items()
    }
    args = {k: v for k, v in vars(cfg).items() if k != "hidden"}  # written before the hidden state existed
    torch.save({"model_args": args, "model": state}, tmp_path / "old.pth")
    loaded, _ = load_checkpoint(tmp_path / "old.pth")
    assert loaded.cfg.hidden == 0 and loaded.cfg.upsampler == upsampler
    assert np.array_equal(_out(loaded), _out(model))


def test_read_checkpoint_names_the_architecture_of_a_file_from_before_the_key(tmp_path, tiny_cfg):
    model = random_frvsr(tiny_cfg)
    torch.save({"model_args": vars(tiny_cfg), "model": model.state_dict()}, tmp_path / "old.pth")
    assert read_checkpoint(tmp_path / "old.pth")["arch"] == "frvsr"
    torch.save({"weights": model.state_dict()}, tmp_path / "other.pth")
    with pytest.raises(ValueError, match="other.pth.*not a model checkpoint"):
        read_checkpoint(tmp_path / "other.pth")
    with pytest.raises(FileNotFoundError, match="none.pth"):
        read_checkpoint(tmp_path / "none.pth")


def test_write_checkpoint_writes_what_it_is_given_and_refuses_what_is_not_a_checkpoint(tmp_path, tiny_cfg):
    save_checkpoint(tmp_path / "m.pth", random_frvsr(tiny_cfg), step=3)
    ckpt = read_checkpoint(tmp_path / "m.pth")
    write_checkpoint(tmp_path / "n.pth", {**ckpt, "int8": {}})
    again = read_checkpoint(tmp_path / "n.pth")
    assert again["int8"] == {} and again["step"] == 3
    assert all(torch.equal(v, ckpt["model"][k]) for k, v in again["model"].items())
    with pytest.raises(ValueError, match="not a checkpoint"):
        write_checkpoint(tmp_path / "x.pth", {"model": ckpt["model"]})
    assert not (tmp_path / "x.pth").exists()


def test_only_model_checkpoint_writes_checkpoint_files():
    """Each file format has one writer: no other module of the project calls ``torch.save`` (the GAN stage's
    discriminator file, ``train/gan.py``, and the flow cache, ``train/flows.py``, are formats of their own)."""
    root = Path(__file__).resolve().parents[2]
    own = {"model/checkpoint.py", "train/gan.py", "train/flows.py"}
    writers = []
    for path in sorted(root.glob("[a-z]*/**/*.py")) + sorted(root.glob("*.py")):
        rel = path.relative_to(root).as_posix()
        if rel.startswith((".venv/", "tests/", "runs/")) or rel in own:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr == "save" and getattr(node.value, "id", None) == "torch":
                writers.append(f"{rel}:{node.lineno}")
    assert writers == [], f"torch.save outside model/checkpoint.py: {writers}"


def test_unknown_architecture_names_the_known_ones(tmp_path, tiny_cfg):
    save_checkpoint(tmp_path / "m.pth", random_frvsr(tiny_cfg))
    ckpt = torch.load(tmp_path / "m.pth", weights_only=True)
    torch.save({**ckpt, "arch": "edvr"}, tmp_path / "m.pth")
    with pytest.raises(ValueError, match="unknown architecture .edvr.*frvsr"):
        load_checkpoint(tmp_path / "m.pth")


@dataclass
class BicubicConfig:
    gain: float = 1.0

    @classmethod
    def from_dict(cls, d: dict) -> "BicubicConfig":
        return cls(**d)


class Bicubic(nn.Module):
    """A second architecture as small as the contract allows: bicubic times a learned gain."""

    def __init__(self, cfg: BicubicConfig):
        super().__init__()
        self.cfg = cfg
        self.gain = nn.Parameter(torch.tensor(cfg.gain))

    def iterate(self, frames, cut_threshold=None):
        for lr in frames:
            hr = nn.functional.interpolate(lr, scale_factor=4, mode="bicubic", align_corners=False) * self.gain
            yield hr, lr.new_zeros(lr.shape[0], 2, *lr.shape[-2:])


def test_a_second_architecture_needs_one_line_in_the_table(tmp_path, monkeypatch):
    monkeypatch.setitem(ARCHS, "bicubic", (BicubicConfig, Bicubic))
    save_checkpoint(tmp_path / "b.pth", Bicubic(BicubicConfig(gain=0.5)))
    model, ckpt = load_checkpoint(tmp_path / "b.pth")
    assert ckpt["arch"] == "bicubic" and isinstance(model, Bicubic) and model.gain.item() == 0.5
    out = _out(model)  # served and evaluated through the one inference path
    assert out.shape == (3, 64, 96, 3) and abs(out.mean() - 0.5 * np.mean(CLIP)) < 2
    monkeypatch.delitem(ARCHS, "bicubic")
    with pytest.raises(ValueError, match="not in model.checkpoint.ARCHS"):
        checkpoint.arch_of(Bicubic(BicubicConfig()))
