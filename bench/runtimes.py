"""The runtimes side by side: the shipped default (FRVSR) and the teacher (BasicVSR) at each precision and runtime,
speed and quality in one run.

- ``bf16 autocast (before)``: fp32 weights under ``torch.autocast``, the path served before the weights were stored
  in bf16 (the comparison: ``bench/results/runtimes.md``);
- ``bf16``: the weights stored in bf16 (``model.precision.reduced_precision``), what ``auto`` runs without int8;
- ``bf16 compiled``: that, with SRNet through ``torch.compile`` (Inductor, frozen weights, dynamic shapes);
- ``int8``: SRNet's calibrated int8 program, compiled (``model.quantize``; the checkpoint must hold one:
  ``python -m train.calibrate``); the flow bf16, the warps float32; and the same with the flow computed in a thread
  of its own ahead of SRNet, as the service runs it (timed only: its frames are the int8 row's, exactly);
- the teacher: ``fp32`` (the issue's 2.4 s/frame), ``bf16 autocast (before)``, ``bf16``.

Speed: ms/frame at 176x144 and 200x200 (a random clip, ``--frames`` frames after a warm-up at both sizes, which
also pays any compile), runtimes interleaved round by round so the box's swings hit all alike; the median round.
Quality: platform PSNR on each test list, clean BI input and H.264 CRF 23, by ``client_test.py``'s code
(``train.evaluate``), the paired default's model picked as the server picks it; the difference to ``bf16``.

    OMP_WAIT_POLICY=PASSIVE python -m bench.runtimes [--teacher_lists vimeo] [--skip_teacher]

Saves ``bench/results/runtimes.{json,md}``; ``make bench`` runs it.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from bench.models import list_quality
from bench.saved import save_result
from common.paths import DEFAULT_MODEL, ROOT, TEST_LISTS, runs_dir
from model.checkpoint import read_checkpoint
from model.inference import super_resolve
from model.precision import reduced_precision
from model.quantize import int8_unavailable, load_for_serving, prepare, programs_of
from model.variants import ModelSet, load_model_set
from train.degradations import EVAL_CRF
from video.settings import HandlerSettings

log = logging.getLogger(__name__)
SIZES = ((176, 144), (200, 200))
CLIP_FRAMES = 150  # the 5 s 30 fps clip the targets name
SERVED = f"int8, flow {HandlerSettings.flow_ahead} ahead (as served)"
TEACHER = runs_dir() / "teacher" / "basicvsr_BIx4.pth"  # where --extra_model teacher exports it


class Autocast(nn.Module):
    """A float32 model run under bf16 autocast, the path served before the weights were stored in bf16 (run it at
    precision fp32; the comparison: ``bench/results/runtimes.md``)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.inner = model

    def iterate(self, frames: Iterable[torch.Tensor], cut_threshold: float | None = None, **_: object) -> Iterator:
        it = self.inner.iterate(frames, cut_threshold=cut_threshold)
        while True:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                try:
                    item = next(it)
                except StopIteration:
                    return
            yield item


def compiled_srnet(model: nn.Module) -> nn.Module:
    """A bf16 copy of an FRVSR whose SRNet runs through ``torch.compile`` (Inductor, frozen weights)."""
    import torch._inductor.config as inductor

    inductor.freezing = True
    out = reduced_precision(model, "bf16")  # a copy (the model given is float32)
    out.srnet = torch.compile(out.srnet, dynamic=True)
    return out


def frvsr_runtimes(path: Path) -> dict[str, tuple[ModelSet, str]]:
    """{runtime: (the model set, the precision to call super_resolve with)} for a checkpoint's FRVSR models.

    The served row is ``load_for_serving``'s models (what a request gets); the other rows are comparison rows, so they
    are built from the unprepared fp32 models (``load_model_set``) at the runtime each row names."""
    base, ckpt = load_model_set(path)
    each = lambda fn: ModelSet({k: fn(k, m) for k, m in base.models.items()}, base.rule)  # noqa: E731
    out = {
        "bf16 autocast (before)": (each(lambda k, m: Autocast(m)), "fp32"),
        "bf16": (each(lambda k, m: reduced_precision(m, "bf16")), "bf16"),
        "bf16 compiled": (each(lambda k, m: compiled_srnet(m)), "bf16"),
    }
    programs = programs_of(ckpt)
    why = int8_unavailable() or ("" if set(programs) >= set(base.models) else "no int8 program in the checkpoint")
    if why:
        log.warning("int8 skipped: %s", why)
    else:
        out["int8"] = (each(lambda k, m: prepare(m, "int8", programs[k])), "int8")
        served, precision, _ = load_for_serving(path, "int8")  # the flow computed ahead: the int8 row's frames, timed
        out[SERVED] = (served, precision)
    return out


def teacher_runtimes(checkpoint: Path | None) -> dict[str, tuple[ModelSet, str]]:
    """The teacher at fp32, under autocast, with bf16 weights, and int8 (its two trunks) when ``checkpoint``
    (the exported teacher, ``python -m model.commands teacher-export``) holds calibrated programs
    (``train.calibrate``), or when the shared clips are here to calibrate it in this run (2 train-split clips x 6
    frames per list)."""
    from model.teacher import load_teacher
    from model.variants import InputRule

    net = load_teacher().to(memory_format=torch.channels_last)
    one = lambda m: ModelSet({"clean": m}, InputRule())  # noqa: E731
    out = {
        "fp32": (one(net), "fp32"),
        "bf16 autocast (before)": (one(Autocast(net)), "fp32"),
        "bf16": (one(reduced_precision(net, "bf16")), "bf16"),
    }
    programs = programs_of(read_checkpoint(checkpoint)).get("clean") if checkpoint else None
    if programs is None and not int8_unavailable() and all(p.is_dir() for p in TEST_LISTS.values()):
        from train.calibrate import calibrate_model, calibration_clips

        log.info("calibrating the teacher's int8 trunks (no calibrated teacher checkpoint given)")
        programs = calibrate_model(net, calibration_clips(list(TEST_LISTS.values()), 2, 6), compressed=False)
    if programs is not None and not int8_unavailable():
        out["int8"] = (one(prepare(net, "int8", programs)), "int8")
    return out


def clip_seconds(model: nn.Module, precision: str, frames: list[np.ndarray], flow_ahead: int = 0) -> float:
    t0 = time.perf_counter()
    for _ in super_resolve(model, iter(frames), precision=precision, flow_ahead=flow_ahead):
        pass
    return time.perf_counter() - t0


def speeds(runtimes: dict[str, tuple[ModelSet, str]], frames: int, rounds: int) -> dict[str, dict]:
    """ms/frame per runtime and size (median of ``rounds`` interleaved rounds) and the warm-up seconds."""
    rng = np.random.default_rng(0)
    clips = {(w, h): [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(frames)] for w, h in SIZES}
    out = {}
    for name, (models, precision) in runtimes.items():
        net = models.models["clean"]
        t0 = time.perf_counter()
        for w, h in (*SIZES, (64, 48)):  # two sizes and a third: a dynamic compile is done after these
            clip_seconds(net, precision, [clips[SIZES[0]][0][:h, :w]] * 2)
        out[name] = {"warm_up_s": time.perf_counter() - t0}
        log.info("%s: warm-up %.1f s", name, out[name]["warm_up_s"])
    per = {(n, s): [] for n in runtimes for s in SIZES}
    for _ in range(rounds):
        for name, (models, precision) in runtimes.items():
            ahead = HandlerSettings.flow_ahead if name == SERVED else 0
            for size in SIZES:
                per[name, size].append(
                    clip_seconds(models.models["clean"], precision, clips[size], ahead) / frames * 1000
                )
    for name in runtimes:
        for w, h in SIZES:
            out[name][f"ms_{w}x{h}"] = statistics.median(per[name, (w, h)])
        out[name]["clip_s_176x144"] = out[name]["ms_176x144"] * CLIP_FRAMES / 1000
        log.info("%s: %s", name, {k: round(v, 1) for k, v in out[name].items()})
    return out


def qualities(runtimes: dict[str, tuple[ModelSet, str]], lists: dict[str, Path]) -> dict[str, dict]:
    out = {}
    for name, (models, precision) in runtimes.items():
        if name == SERVED:  # the int8 row's frames exactly (tests/model/test_inference.py)
            continue
        out[name] = {ln: list_quality(models, f, precision=precision) for ln, f in lists.items() if f.is_dir()}
        log.info("%s: %s", name, out[name])
    return out


def run(
    model: Path, lists: dict[str, Path], teacher_lists: dict[str, Path] | None, frames: int, rounds: int,
    teacher: Path | None = None,
) -> dict:  # fmt: skip
    res: dict = {"model": str(model), "machine": _machine(), "torch_threads": torch.get_num_threads()}
    groups: list[tuple[str, Callable[[], dict], dict[str, Path]]] = [("frvsr", lambda: frvsr_runtimes(model), lists)]
    if teacher_lists is not None:
        groups.append(("teacher", lambda: teacher_runtimes(teacher), teacher_lists))
    for group, make, qlists in groups:
        runtimes = make()
        res[group] = {"speed": speeds(runtimes, frames if group == "frvsr" else 3, rounds)}
        res[group]["quality"] = qualities(runtimes, qlists)
    return res


def _machine() -> str:
    import platform

    import psutil

    from model.runtime import available_cores

    return (
        f"{platform.processor() or platform.machine()}, {available_cores()} cores, "
        f"{psutil.virtual_memory().total / 2**30:.0f} GiB; int8: {int8_unavailable() or 'available'}"
    )


def markdown(res: dict) -> str:
    out = [
        f"Machine: {res['machine']}; {res['torch_threads']} torch threads. Model: `{res['model']}`.",
        "",
        "Speed: ms/frame on a random clip after a warm-up at both sizes (which pays any compile), runtimes "
        "interleaved round by round, the median round; the 5 s clip = 150 frames at that rate (model only). "
        f"Quality: platform PSNR (dB) on each test list, clean BI input and H.264 CRF {EVAL_CRF}, "
        "`client_test.py`'s code; the paired default's model picked as the server picks it; delta against bf16.",
    ]
    for group, title in (("frvsr", "FRVSR (the shipped default)"), ("teacher", "The teacher (BasicVSR BIx4)")):
        if group not in res:
            continue
        g = res[group]
        lists = sorted({ln for q in g["quality"].values() for ln in q})
        head = "| runtime | ms/frame 176x144 | ms/frame 200x200 | 5 s clip s | warm-up s |"
        rule = "|---|---:|---:|---:|---:|"
        for ln in lists:
            head += f" {ln} clean | delta | {ln} CRF {EVAL_CRF} | delta |"
            rule += "---:|---:|---:|---:|"
        out += ["", f"### {title}", "", head, rule]
        ref = g["quality"].get("bf16", {})
        for name, sp in g["speed"].items():
            row = (
                f"| {name} | {sp['ms_176x144']:.1f} | {sp['ms_200x200']:.1f} | {sp['clip_s_176x144']:.1f} "
                f"| {sp['warm_up_s']:.1f} |"
            )
            for ln in lists:
                q = g["quality"].get(name, {}).get(ln)
                for cond in ("clean", f"crf{EVAL_CRF}"):
                    if q is None:
                        row += " - | - |"
                        continue
                    d = q[cond]["model"] - ref[ln][cond]["model"] if ln in ref else float("nan")
                    row += f" {q[cond]['model']:.3f} | {d:+.3f} |"
            out.append(row)
        bic = {ln: next(iter(g["quality"].values()))[ln] for ln in lists}
        out.append(
            "\nbicubic: "
            + "; ".join(f"{ln} {b['clean']['bicubic']:.3f} clean, {b[f'crf{EVAL_CRF}']['bicubic']:.3f} CRF {EVAL_CRF}"
                        for ln, b in bic.items())  # fmt: skip
        )
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.runtimes", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    p.add_argument("--lists", nargs="+", default=list(TEST_LISTS), choices=list(TEST_LISTS))
    p.add_argument("--teacher_lists", nargs="*", default=["vimeo"], choices=list(TEST_LISTS),
                   help="the teacher's quality lists (vsr_train: minutes per clip and condition)")  # fmt: skip
    p.add_argument("--skip_teacher", action="store_true")
    p.add_argument("--teacher", type=Path, default=TEACHER, help="the exported teacher, with its int8 programs if any")
    p.add_argument("--frames", type=int, default=12, help="frames per timed clip (FRVSR; the teacher: 3)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "runtimes")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    teacher = None if a.skip_teacher else {n: TEST_LISTS[n] for n in a.teacher_lists}
    given = a.teacher if a.teacher.is_file() else None
    res = run(a.model, {n: TEST_LISTS[n] for n in a.lists}, teacher, a.frames, a.rounds, given)
    save_result(a.out, res, markdown(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
