"""int8 SRNet for x86 CPUs with AMX-INT8 or AVX512-VNNI: post-training static quantization with PyTorch's PT2E
flow (torchao's ``X86InductorQuantizer``), run by Inductor.

What is int8: SRNet's convolutions (weights per output channel, symmetric; activations per tensor, uint8, from
histograms of real clips), except the layers in ``KEEP_FLOAT``; the other layers of the program (ReLU, the
residual adds) run bf16 and the bicubic residual float32. The flow (SPyNet or FNet) stays in bf16 eager, the
warps in float32 (``FRVSR.step``): int8 flow cost alignment in the first study (``bench/results/int8_study.md``).

The calibrated SRNet is a ``torch.export`` program with dynamic height and width, stored as bytes in the
checkpoint (``INT8_KEY``, one per model variant: ``train.calibrate`` writes it), so a serving worker needs no
data: it loads the program and compiles it once for every frame size at start (``Int8SRNet.warm_up``).
Inductor's on-disk cache makes a restart's compile shorter.

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

log = logging.getLogger(__name__)

INT8_KEY = "int8"  # checkpoint key: {variant: {"program": bytes, "keep_float": [...], "calibration": str, ...}}
KEEP_FLOAT = ("head", "upsample")  # SRNet layers left in bf16 (see bench/results/runtimes.md for the choice)
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


def _dynamic_shapes() -> dict:
    h, w = torch.export.Dim("h", min=2, max=MAX_SIDE), torch.export.Dim("w", min=2, max=MAX_SIDE)
    return {"x": {2: h, 3: w}, "base": {2: h, 3: w}}


def quantize_srnet(
    srnet: nn.Module, calibrate: Callable[[nn.Module], None], keep_float: Iterable[str] = KEEP_FLOAT
) -> bytes:
    """SRNet calibrated and quantized, as a saved ``torch.export`` program.

    ``calibrate(observed)`` runs the observed SRNet (a drop-in module: same inputs, same outputs) on real
    inputs, e.g. inside the recurrence over calibration clips (``train.calibrate``).
    """
    from torchao.quantization.pt2e import allow_exported_model_train_eval
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
    from torchao.quantization.pt2e.quantizer import x86_inductor_quantizer as xiq

    net = copy.deepcopy(srnet).float().eval()
    c_in = net.head.in_channels
    example = (torch.rand(1, c_in, 32, 40), torch.rand(1, net.upsample.out_channels, 32, 40))
    quantizer = xiq.X86InductorQuantizer().set_global(xiq.get_default_x86_inductor_quantization_config())
    for name in keep_float:
        quantizer.set_module_name_qconfig(name, None)
    with torch.no_grad():
        graph = torch.export.export(net, example, dynamic_shapes=_dynamic_shapes()).module()
        observed = allow_exported_model_train_eval(prepare_pt2e(graph, quantizer))  # eval() inside the recurrence
        calibrate(observed)
        quantized = convert_pt2e(observed)
        program = torch.export.export(quantized, example, dynamic_shapes=_dynamic_shapes())
    buf = io.BytesIO()
    torch.export.save(program, buf)
    return buf.getvalue()


class Int8SRNet(nn.Module):
    """A quantized SRNet program in SRNet's place: ``(x, base) -> (hr, state)``, compiled by Inductor on first use."""

    def __init__(self, program: bytes, hidden: int):
        super().__init__()
        import torchao  # noqa: F401  (the program's quantize/dequantize ops)

        self.hidden = hidden
        # not a submodule: its float weights are the program's constants, never cast, moved or counted as the
        # model's parameters (``reduced_precision`` casts parameters; the program is CPU-only)
        object.__setattr__(self, "graph", torch.export.load(io.BytesIO(program)).module())
        self._compiled: Callable | None = None

    def forward(self, x: torch.Tensor, base: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self._compiled is None:
            import torch._inductor.config as inductor

            inductor.freezing = True  # weights become constants: prepacked int8 convolutions with fused ReLU/add
            object.__setattr__(self, "_compiled", torch.compile(self.graph, dynamic=True))  # not a submodule either
        with torch.autocast(x.device.type, dtype=torch.bfloat16):  # the non-int8 layers in bf16
            hr, state = self._compiled(x.float().contiguous(memory_format=torch.channels_last), base.float())
        return hr.float(), (state if self.hidden else None)


def int8_model(model: nn.Module, program: bytes) -> nn.Module:
    """A copy of ``model`` (an FRVSR) with bf16 weights outside SRNet and ``program`` as its SRNet."""
    from model.inference import reduced_precision

    out = reduced_precision(model, "bf16")
    if out is model:  # already bf16: never change the caller's model
        out = copy.deepcopy(model)
    out.srnet = Int8SRNet(program, model.cfg.hidden)
    return out


def is_int8(model: nn.Module) -> bool:
    return isinstance(getattr(model, "srnet", None), Int8SRNet)


def programs_of(ckpt: dict) -> dict[str, bytes]:
    """The int8 programs a checkpoint holds, by variant (empty when it was never calibrated)."""
    return {name: part["program"] for name, part in (ckpt.get(INT8_KEY) or {}).items()}


def serving_precision(
    requested: str, device: torch.device | str, ckpt: dict, variants: Iterable[str]
) -> tuple[str, str]:
    """(the precision a server runs, why): ``auto`` is int8 where this machine runs it and the checkpoint holds a
    calibrated program for every variant, else ``model.inference.resolve_precision``'s bf16 or fp32 (the reason
    says why not int8). An explicit ``int8`` that cannot run is a ValueError saying why."""
    from model.inference import resolve_precision

    device = torch.device(device)
    missing = sorted(set(variants) - set(programs_of(ckpt)))
    built = {part.get("torch") for part in (ckpt.get(INT8_KEY) or {}).values()}
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


def prepare(model: nn.Module, precision: str, program: bytes | None = None) -> nn.Module:
    """``model`` ready to run at a resolved ``precision``: int8 (``int8_model``, needs ``program``), or
    ``model.inference.reduced_precision``'s fp32 / bf16 / fp16."""
    from model.inference import reduced_precision

    if precision == "int8":
        if program is None:
            raise ValueError("int8 needs a calibrated program (python -m train.calibrate)")
        return int8_model(model, program)
    return reduced_precision(model, precision)
