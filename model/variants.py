"""One checkpoint, two models: one for clean low-res input and its fine-tune for compressed input.

A small model trained on one degradation mix is not good at both (measured: the realistic mix costs clean
input dB, the clean model loses on H.264). So the shipped ``.pth`` may hold two weight sets of the same
architecture, and each request gets the one its input calls for:

    {'arch', 'model_args', 'model': <clean weights>, ...,          # any loader sees the clean model
     'variants': {'compressed': {'model': <weights>, 'train_settings': ..., 'cpu_seconds': ...}},
     'input_rule': {'clean_min_bpp': 1.5}}

``InputRule`` makes the automatic choice from what the container says: frames handed over in-process
(``codec=None``, the platform's clean definition) and lossless codecs are clean; a lossy stream is clean
only at ``clean_min_bpp`` bits per pixel or more (near-lossless). A request may override it
(``input_quality``: ``clean`` or ``compressed``).

Between the two, the rule may name **blends**: lossy input from ``min_bpp`` up to ``clean_min_bpp`` gets the
weights ``w * clean + (1 - w) * compressed`` (network interpolation, Wang et al., CVPR 2019: two fine-tunes of one
network interpolate smoothly). The blends are built from the two weight sets when the file is loaded (``blend``),
served (and int8-calibrated) like the two; mid-rate H.264 is better served by a blend than by either model
(``bench/results/blends.md``).

``pair`` writes such a file (``python -m model.commands pair CLEAN.pth COMPRESSED.pth OUT.pth [--clean_min_bpp X]
[--blend MIN_BPP:W ...]``); ``unpair`` takes one model back out as a checkpoint of its own (``python -m
model.commands unpair PAIRED.pth clean|compressed OUT.pth``), e.g. to fine-tune it with ``init_from``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn as nn

from model.checkpoint import (
    ARCH,
    INPUT_RULE,
    MODEL,
    MODEL_ARGS,
    RUN_KEYS,
    VARIANTS,
    load_checkpoint,
    model_from,
    read_checkpoint,
    write_checkpoint,
)

# the variants' names, also the values of a request's ``input_quality`` (``wire.payload.INPUT_QUALITIES``)
CLEAN = "clean"
COMPRESSED = "compressed"
# decoders whose output is the encoder's input, bit for bit (or nearly: high-rate intra codecs)
LOSSLESS_CODECS = frozenset(
    {"ffv1", "huffyuv", "ffvhuff", "png", "apng", "rawvideo", "utvideo", "qtrle", "magicyuv", "zlib", "lagarith"}
)


@dataclass(frozen=True)
class InputRule:
    """Which model a clip's input calls for, from its codec and bits per pixel."""

    # a lossy stream at this many bits per pixel or more is treated as clean. Measured on the shared test
    # lists' low-res clips (libx264 veryfast, 4:2:0): CRF 0 3.7-6.3 bpp, CRF 12 0.8-1.8, CRF 18 0.45-0.93,
    # CRF 23 0.24-0.50, CRF 32 0.07-0.20
    clean_min_bpp: float = 1.5
    # (min_bpp, w): a lossy stream below clean_min_bpp and at min_bpp or more gets ``blend_name(w)``, the weights
    # w * clean + (1 - w) * compressed (the highest min_bpp that fits); () = the two models alone
    blends: tuple[tuple[float, float], ...] = ()

    def __post_init__(self) -> None:
        blends = tuple(sorted(((float(b), float(w)) for b, w in self.blends), reverse=True))
        for b, w in blends:
            if not 0 < w < 1 or not 0 < b < self.clean_min_bpp:
                raise ValueError(f"a blend needs 0 < w < 1 and 0 < min_bpp < clean_min_bpp, got ({b}, {w})")
        if len({blend_name(w) for _, w in blends}) != len(blends):
            raise ValueError(f"two blends with the same weight: {blends}")
        object.__setattr__(self, "blends", blends)  # a checkpoint's lists, as ordered tuples

    def choose(self, codec: str | None, bits_per_pixel: float | None) -> str:
        """``CLEAN``, ``COMPRESSED`` or a blend's name for an input; ``codec`` None means frames with no container."""
        if codec is None or codec in LOSSLESS_CODECS:
            return CLEAN
        if bits_per_pixel is not None and bits_per_pixel >= self.clean_min_bpp:
            return CLEAN
        for min_bpp, w in self.blends if bits_per_pixel is not None else ():
            if bits_per_pixel >= min_bpp:
                return blend_name(w)
        return COMPRESSED

    def describe(self, codec: str | None, bits_per_pixel: float | None) -> str:
        """Why ``choose`` chose what it did, for the response header and the log."""
        bpp = "unknown bpp" if bits_per_pixel is None else f"{bits_per_pixel:.3f} bpp"
        return f"{codec or 'frames'}, {bpp}"


def blend_name(w: float) -> str:
    """The name a blend is served under: ``blend50`` for half the clean model's weights."""
    return f"blend{round(w * 100):02d}"


def blend(clean: dict, compressed: dict, w: float) -> dict:
    """The state dict ``w * clean + (1 - w) * compressed`` (integer buffers, if any, the clean model's)."""
    if clean.keys() != compressed.keys():
        raise ValueError("blend two weight sets of one network")
    return {k: w * v + (1 - w) * compressed[k] if v.is_floating_point() else v for k, v in clean.items()}


@dataclass
class ModelSet:
    """The model(s) of one checkpoint, by input quality. A plain checkpoint serves every input with one."""

    models: dict[str, nn.Module]
    rule: InputRule

    def pick(
        self, codec: str | None, bits_per_pixel: float | None, override: str | None = None
    ) -> tuple[str, nn.Module]:
        """(the input quality used, its model): ``override`` when given (``clean``/``compressed``), else the
        rule's choice. With one model that one answers, under the name asked for."""
        quality = override if override in (CLEAN, COMPRESSED) else self.rule.choose(codec, bits_per_pixel)
        return quality, self.models.get(quality, self.models[CLEAN])

    @property
    def paired(self) -> bool:
        return COMPRESSED in self.models


def load_model_set(path: str | Path, device: str | torch.device = "cpu") -> tuple[ModelSet, dict]:
    """Every model of a checkpoint (``load_checkpoint`` for the clean one, the variants beside it), eval mode."""
    clean, ckpt = load_checkpoint(path, device)
    models = {CLEAN: clean}
    rule = InputRule(**(ckpt.get(INPUT_RULE) or {}))

    def built(weights: dict) -> nn.Module:
        return model_from({**ckpt, MODEL: weights}).to(device, memory_format=torch.channels_last).eval()

    for name, part in (ckpt.get(VARIANTS) or {}).items():
        if name != COMPRESSED:
            raise ValueError(f"{path}: unknown model variant {name!r}; this version knows {[COMPRESSED]}")
        models[name] = built(part[MODEL])
    if rule.blends and COMPRESSED not in models:
        raise ValueError(f"{path}: its input rule names blends but it holds no compressed-input model to blend with")
    for _, w in rule.blends:
        models[blend_name(w)] = built(blend(ckpt[MODEL], ckpt[VARIANTS][COMPRESSED][MODEL], w))
    return ModelSet(models, rule), ckpt


def pair(clean_path: str | Path, compressed_path: str | Path, out: str | Path, rule: InputRule) -> dict:
    """Write ``out``: ``clean_path``'s checkpoint with ``compressed_path``'s weights as its compressed variant.

    Both must be the same architecture and configuration (the fine-tune of one from the other). Each
    keeps its own ``train_settings``, ``step``, ``eval`` and ``cpu_seconds`` (a fine-tune's count includes
    the run it started from)."""
    clean, comp = read_checkpoint(clean_path), read_checkpoint(compressed_path)
    for key in (ARCH, MODEL_ARGS):
        if clean.get(key) != comp.get(key):
            raise ValueError(f"{key} differs: {clean.get(key)!r} vs {comp.get(key)!r}; pair two of the same model")
    if VARIANTS in clean or VARIANTS in comp:
        raise ValueError("pair two single checkpoints, not a checkpoint that already holds variants")
    variant = {k: comp[k] for k in (MODEL, *RUN_KEYS) if k in comp}
    paired = {**clean, VARIANTS: {COMPRESSED: variant}, INPUT_RULE: asdict(rule)}
    write_checkpoint(out, paired)
    return paired


def with_rule(paired_path: str | Path, out: str | Path, rule: InputRule) -> dict:
    """Write ``out``: the paired checkpoint ``paired_path`` with ``rule`` as its input rule. Its int8 programs are
    kept; with a blend that has none the file serves bf16 (``model.quantize.serving_precision`` says why) until
    ``python -m train.calibrate`` calibrates it."""
    ckpt = read_checkpoint(paired_path)
    if COMPRESSED not in (ckpt.get(VARIANTS) or {}):
        raise ValueError(f"{paired_path} holds one model; pair two with python -m model.commands pair first")
    ruled = {**ckpt, INPUT_RULE: asdict(rule)}
    write_checkpoint(out, ruled)
    return ruled


def unpair(paired_path: str | Path, name: str, out: str | Path) -> dict:
    """Write ``out``: the model ``name`` (``clean`` or ``compressed``) of a paired checkpoint as a single checkpoint,
    with its own run keys (``train_settings``, ``step``, ``eval``, ``cpu_seconds``); int8 programs are dropped."""
    ckpt = read_checkpoint(paired_path)
    variants = ckpt.get(VARIANTS) or {}
    if COMPRESSED not in variants:
        raise ValueError(f"{paired_path} holds one model; there is nothing to unpair")
    if name not in (CLEAN, COMPRESSED):
        raise ValueError(f"unpair {CLEAN} or {COMPRESSED}, not {name!r}")
    own = variants[COMPRESSED] if name == COMPRESSED else {k: v for k, v in ckpt.items() if k in (MODEL, *RUN_KEYS)}
    single = {ARCH: ckpt[ARCH], MODEL_ARGS: ckpt[MODEL_ARGS], **own}
    write_checkpoint(out, single)
    return single
