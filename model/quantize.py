"""int8 for x86 CPUs with AMX-INT8 or AVX512-VNNI: post-training static quantization with PyTorch's PT2E flow
(torchao's ``X86InductorQuantizer``), run by Inductor.

What is int8: the modules an architecture names in its ``INT8`` (FRVSR: SRNet; BasicVSR: its two propagation
trunks), their convolutions (weights per output channel, symmetric; activations per tensor, uint8, from
histograms of real clips) except the layers ``INT8`` keeps out (SRNet's head and upsampling convolutions: they
cost the most PSNR in int8, bench/results/runtimes.md); the other layers of a program (ReLU, the residual adds) run
bf16. Everything else runs bf16 eager, with the flow, the warps and the bicubic residual in float32
(``FRVSR.step``): an int8 flow costs alignment (``bench/results/int8_study.md``).

Each quantized module is a ``torch.export`` program with dynamic height and width, stored as bytes in the
checkpoint (``model.checkpoint.INT8``, per model variant: ``train.calibrate`` writes them), so a serving worker
needs no data: it loads the programs and compiles them once for every frame size at start (``handler.upscaler``
warms up at three sizes). Inductor's on-disk cache makes a restart's compile shorter.

``int8_unavailable()`` says why int8 cannot run here (no AMX-INT8/VNNI, oneDNN held below it by
``ONEDNN_MAX_CPU_ISA``, torchao or a C++ compiler missing): the handler then falls back to bf16/fp32 by itself.
"""

from __future__ import annotations

import copy
import io
import logging
import os
import shutil
from collections.abc import Callable, Iterable

import torch
import torch.nn as nn

from model.checkpoint import INT8
from model.precision import reduced_precision, resolve_precision
from model.variants import ModelSet, load_model_set

log = logging.getLogger(__name__)

MAX_SIDE = 512  # the program's dynamic height and width bound (padded low-res sides; the API allows 200)
# oneDNN ISA names (ONEDNN_MAX_CPU_ISA) that have no VNNI: int8 convolutions would not be faster than bf16
_NO_VNNI = ("SSE41", "AVX", "AVX2", "AVX512_CORE", "DEFAULT_NO_VNNI")


def int8_unavailable() -> str | None:
    """Why int8 cannot run on this machine, or None when it can."""
    isa = os.environ.get("ONEDNN_MAX_CPU_ISA", "").upper()
    if isa in _NO_VNNI:
        return f"ONEDNN_MAX_CPU_ISA={isa} keeps oneDNN below AVX512-VNNI/AMX-INT8"
    probes = [getattr(torch.cpu, n, None) for n in ("_is_amx_tile_supported", "_is_vnni_supported")]
    if not any(bool(p()) for p in probes if p is not None):
        return "this CPU has neither AMX-INT8 nor AVX512-VNNI"
    try:
        import torchao  # noqa: F401  (registers the quantize/dequantize ops the program uses)
    except ImportError:
        return "torchao is not installed (pip install -r requirements.txt)"
    if not any(shutil.which(cc) for cc in ("g++", "c++", "clang++")):
        return "no C++ compiler for Inductor (apt-get install g++)"
    return None


def _dynamic(args: tuple) -> tuple:
    """One export spec per argument: every 4-D tensor dynamic in height and width (the same two sizes)."""
    h, w = torch.export.Dim("h", min=2, max=MAX_SIDE), torch.export.Dim("w", min=2, max=MAX_SIDE)
    return tuple({2: h, 3: w} if isinstance(a, torch.Tensor) and a.ndim == 4 else None for a in args)


def _example_inputs(model: nn.Module) -> dict[str, tuple]:
    """The arguments each of ``model.INT8``'s modules is called with, from a two-frame 32x40 clip."""
    seen: dict[str, tuple] = {}
    hooks = [
        model.get_submodule(path).register_forward_pre_hook(
            lambda _m, args, path=path: seen.setdefault(path, tuple(a.detach().clone() if a is not None else a
                                                                    for a in args))  # fmt: skip
        )
        for path in model.INT8
    ]
    try:
        with torch.no_grad():
            list(model.iterate([torch.rand(1, 3, 32, 40)] * 2))
    finally:
        for h in hooks:
            h.remove()
    return seen


def quantize(model: nn.Module, calibrate: Callable[[nn.Module], None]) -> dict[str, bytes]:
    """The modules named in ``model.INT8`` (an FRVSR's SRNet, BasicVSR's two trunks) calibrated and quantized, each a
    saved ``torch.export`` program (dynamic height and width) by its module path; the layers ``model.INT8`` lists
    for a module stay bf16.

    ``calibrate(observed)`` runs a copy of the model whose modules are the observed programs (drop-ins: same
    inputs, same outputs) on real inputs, inside the real recurrence (``train.calibrate``).
    """
    from torchao.quantization.pt2e import allow_exported_model_train_eval
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
    from torchao.quantization.pt2e.quantizer import x86_inductor_quantizer as xiq

    net = copy.deepcopy(model).float().eval()
    examples = _example_inputs(net)
    observed = {}
    with torch.no_grad():
        for path, keep_float in net.INT8.items():
            quantizer = xiq.X86InductorQuantizer().set_global(xiq.get_default_x86_inductor_quantization_config())
            for name in keep_float:
                quantizer.set_module_name_qconfig(name, None)
            args = examples[path]
            graph = torch.export.export(net.get_submodule(path), args, dynamic_shapes=_dynamic(args)).module()
            observed[path] = allow_exported_model_train_eval(prepare_pt2e(graph, quantizer))  # eval() in iterate
            net.set_submodule(path, observed[path])
        calibrate(net)
        out = {}
        for path, obs in observed.items():
            args = examples[path]
            program = torch.export.export(convert_pt2e(obs), args, dynamic_shapes=_dynamic(args))
            buf = io.BytesIO()
            torch.export.save(program, buf)
            out[path] = buf.getvalue()
    return out


class Int8Program(nn.Module):
    """A quantized module's program in the module's place (same arguments, same outputs), compiled by Inductor on
    first use; the layers that are not int8 run bf16, 4-D inputs are laid out channels-last."""

    def __init__(self, program: bytes):
        super().__init__()
        import torchao  # noqa: F401  (the program's quantize/dequantize ops)

        # not a submodule: its float weights are the program's constants, never cast, moved or counted as the
        # model's parameters (``reduced_precision`` casts parameters; the program is CPU-only)
        object.__setattr__(self, "graph", torch.export.load(io.BytesIO(program)).module())
        self._compiled: Callable | None = None

    def forward(self, *args: torch.Tensor | None):
        if self._compiled is None:
            import torch._inductor.config as inductor

            inductor.freezing = True  # weights become constants: prepacked int8 convolutions with fused ReLU/add
            object.__setattr__(self, "_compiled", torch.compile(self.graph, dynamic=True))  # not a submodule either
        args = tuple(
            a.float().contiguous(memory_format=torch.channels_last) if a is not None and a.ndim == 4 else a
            for a in args
        )
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return self._compiled(*args)


def int8_model(model: nn.Module, programs: dict[str, bytes]) -> nn.Module:
    """A copy of ``model`` with bf16 weights, each module of ``programs`` replaced by its int8 program."""
    out = reduced_precision(model, "bf16")
    if out is model:  # already bf16: never change the caller's model
        out = copy.deepcopy(model)
    for path, program in programs.items():
        out.set_submodule(path, Int8Program(program))
    return out


def is_int8(model: nn.Module) -> bool:
    return any(isinstance(m, Int8Program) for m in model.modules())


def programs_of(ckpt: dict) -> dict[str, dict[str, bytes]]:
    """The int8 programs a checkpoint holds: {variant: {module path: program}} (empty when never calibrated)."""
    return {name: part["programs"] for name, part in (ckpt.get(INT8) or {}).items()}


def serving_precision(
    requested: str, device: torch.device | str, ckpt: dict, variants: Iterable[str]
) -> tuple[str, str]:
    """(the precision a server runs, why): ``auto`` is int8 where this machine runs it and the checkpoint holds a
    calibrated program for every variant, else ``model.precision.resolve_precision``'s bf16 or fp32 (the reason
    says why not int8). An explicit ``int8`` that cannot run is a ValueError saying why."""
    device = torch.device(device)
    missing = sorted(set(variants) - set(programs_of(ckpt)))
    built = {part.get("torch") for part in (ckpt.get(INT8) or {}).values()}
    if device.type != "cpu":
        why = f"int8 is for CPUs; {device.type} runs its own reduced precision"
    elif missing:
        why = f"the checkpoint holds no int8 program for {missing} (python -m train.calibrate CKPT --data DIR)"
    elif built != {str(torch.__version__)}:
        why = f"the int8 programs were made with torch {sorted(map(str, built))}, this is {torch.__version__}"
    else:
        why = int8_unavailable() or ""
    if requested == "int8":
        if why:
            raise ValueError(f"--precision int8 cannot run: {why}; use --precision auto")
        return "int8", "requested"
    if requested == "auto" and not why:
        return "int8", "auto: calibrated int8 program, CPU with AMX-INT8/VNNI"
    resolved = resolve_precision(requested, device)
    return resolved, (f"auto, not int8: {why}" if requested == "auto" else "requested")


def prepare(model: nn.Module, precision: str, programs: dict[str, bytes] | None = None) -> nn.Module:
    """``model`` ready to run at a resolved ``precision``: int8 (``int8_model``, needs ``programs``), or
    ``model.precision.reduced_precision``'s fp32 / bf16 / fp16."""
    if precision == "int8":
        if not programs:
            raise ValueError("int8 needs calibrated programs (python -m train.calibrate)")
        return int8_model(model, programs)
    return reduced_precision(model, precision)


def load_for_serving(
    path, requested: str = "auto", device: torch.device | str = "cpu"
) -> tuple[ModelSet, str, str]:
    """A checkpoint's models (``load_model_set``) prepared as a server runs them: (the set, the precision
    ``serving_precision`` chose, why)."""
    models, ckpt = load_model_set(path, device)
    # re-parameterised blocks are served folded into plain convolutions (FRVSR.fused: the same outputs)
    models = ModelSet(
        {k: m.fused().to(device, memory_format=torch.channels_last) if hasattr(m, "fused") else m
         for k, m in models.models.items()},
        models.rule,
    )  # fmt: skip
    precision, why = serving_precision(requested, device, ckpt, models.models)
    programs = programs_of(ckpt)
    prepared = {k: prepare(m, precision, programs.get(k)) for k, m in models.models.items()}
    return ModelSet(prepared, models.rule), precision, why
