"""Checkpoint files: ``{'arch', 'model_args', 'model', ...}``, and the table that rebuilds a model from one.

``ARCHS`` maps an architecture name to its (config dataclass, model class). A checkpoint stores its
``arch`` and its config as ``model_args`` (nanoGPT style), so every loader rebuilds the exact network.
Checkpoints written before the key existed are FRVSR.

This module names every key of the file (below) and is its one writer (``write_checkpoint``): a trained model
(``save_checkpoint``), a pair of models (``model.variants.pair``) and the int8 programs (``train.calibrate``)
all go through it. ``read_checkpoint`` reads any of them, old ones too.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import torch
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel

from common.files import atomic_path
from model.basicvsr import BasicVSR, BasicVSRConfig
from model.frvsr import FRVSR, FRVSRConfig
from model.frvsr_spynet import FRVSRSpyNet, FRVSRSpyNetConfig

# The keys of a checkpoint file. Besides these, a file holds metadata a writer adds: ``RUN_KEYS`` (a training
# run's), ``converted_from`` (``model.commands from-frvsr``), ``source``/``licence``/``training_data`` (the teacher).
ARCH = "arch"  # an ``ARCHS`` name; absent: ``DEFAULT_ARCH``
MODEL_ARGS = "model_args"  # asdict(the model's config)
MODEL = "model"  # the model's state dict (of a paired checkpoint: the clean model's)
VARIANTS = "variants"  # {name: {MODEL: state dict, RUN_KEYS...}}: more models of the same architecture (model.variants)
INPUT_RULE = "input_rule"  # asdict(model.variants.InputRule): which variant an input gets
INT8 = "int8"  # {variant: {"programs": {module path: bytes}, "keep_float", "calibration", "torch"}} (model.quantize)
# what a training run (train.trainer) adds; counted_targets: the teacher-target caches its cpu_seconds include
RUN_KEYS = ("train_settings", "cpu_seconds", "counted_targets", "step", "epoch", "eval")

# one line per architecture: name -> (config class with a from_dict, nn.Module class taking the config)
ARCHS: dict[str, tuple[type, type[nn.Module]]] = {
    "frvsr": (FRVSRConfig, FRVSR),
    "basicvsr": (BasicVSRConfig, BasicVSR),
    "frvsr-spynet": (FRVSRSpyNetConfig, FRVSRSpyNet),
}
DEFAULT_ARCH = "frvsr"  # what a checkpoint without an ``arch`` key holds


def arch_of(model: nn.Module) -> str:
    """The ``ARCHS`` name of a model (or of a DDP-wrapped one)."""
    cls = type(unwrap(model))
    for name, (_, model_cls) in ARCHS.items():
        if model_cls is cls:
            return name
    raise ValueError(f"{cls.__name__} is not in model.checkpoint.ARCHS; add a line for it")


def save_checkpoint(path: str | Path, model: nn.Module, **extra) -> None:
    """Atomically write ``{'arch': name, 'model_args': cfg dict, 'model': state_dict, **extra}``."""
    net = unwrap(model)
    write_checkpoint(path, {ARCH: arch_of(net), MODEL_ARGS: asdict(net.cfg), MODEL: cpu_state_dict(net), **extra})


def write_checkpoint(path: str | Path, ckpt: dict) -> None:
    """Atomically write a checkpoint dict (one ``read_checkpoint`` or ``save_checkpoint`` made, with keys added):
    the one writer of checkpoint files."""
    missing = [k for k in (ARCH, MODEL_ARGS, MODEL) if k not in ckpt]
    if missing:
        raise ValueError(f"not a checkpoint: no {missing} (write a model with save_checkpoint)")
    with atomic_path(path) as tmp:
        torch.save(ckpt, tmp)


def read_checkpoint(path: str | Path) -> dict:
    """A checkpoint file's dict as written (tensors on the CPU), ``ARCH`` filled in for files older than it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a wrong or damaged file: say which one
        raise ValueError(f"cannot load model checkpoint {path}: {e}") from e
    if not isinstance(ckpt, dict) or MODEL not in ckpt or MODEL_ARGS not in ckpt:
        raise ValueError(f"cannot load model checkpoint {path}: not a model checkpoint (no {MODEL!r}/{MODEL_ARGS!r})")
    return {ARCH: DEFAULT_ARCH, **ckpt}


def load_checkpoint(
    path: str | Path, device: str | torch.device = "cpu", channels_last: bool = True
) -> tuple[nn.Module, dict]:
    """Rebuild the exact architecture stored in ``path``; returns (model in eval mode, checkpoint dict).

    ``channels_last`` lays the weights out NHWC, which oneDNN (CPU) and cuDNN (GPU) convolve faster
    (measured: 1.2-1.3x per frame on CPU); training from a checkpoint passes False and stays NCHW.
    """
    ckpt = read_checkpoint(path)
    try:
        model = model_from(ckpt)
    except Exception as e:  # a wrong or damaged file: say which one
        raise ValueError(f"cannot load model checkpoint {path}: {e}") from e
    model = model.to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model.eval(), ckpt


def model_from(ckpt: dict) -> nn.Module:
    """The exact network a checkpoint dict (or a training run's ``resume.pt``, which has the same keys)
    describes, through ``ARCHS``, with its weights loaded strictly."""
    arch = ckpt.get(ARCH, DEFAULT_ARCH)
    if arch not in ARCHS:
        raise ValueError(f"unknown architecture {arch!r}; this version knows {sorted(ARCHS)}")
    cfg_cls, model_cls = ARCHS[arch]
    model = model_cls(cfg_cls.from_dict(ckpt[MODEL_ARGS]))
    model.load_state_dict(_legacy_keys(ckpt[MODEL]) if arch == "frvsr" else ckpt[MODEL])
    return model


def _legacy_keys(state: dict) -> dict:
    """FRVSR checkpoints written before SRNet's upsampler had its own name kept it in ``srnet.tail``
    (pixel shuffle: ``tail.0`` was the conv; deconv: ``tail.N`` the same layers)."""
    if not any(k.startswith("srnet.tail.") for k in state):
        return state
    pixelshuffle = "srnet.tail.4.weight" not in state  # the deconv tail's last conv was tail.4
    old = "srnet.tail.0." if pixelshuffle else "srnet.tail."
    return {("srnet.upsample." + k[len(old) :] if k.startswith(old) else k): v for k, v in state.items()}


def cpu_state_dict(module: nn.Module) -> dict[str, torch.Tensor]:
    """The state dict of ``module`` (unwrapped from DDP) detached and on the CPU, as every file stores it."""
    return {k: v.detach().cpu() for k, v in unwrap(module).state_dict().items()}


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside a DistributedDataParallel wrapper (or the model itself)."""
    return model.module if isinstance(model, DistributedDataParallel) else model
