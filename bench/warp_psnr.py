"""Warp PSNR of each flow option FRVSR could use, beside its cost.

    python -m bench.warp_psnr                       # + every runs/flow/*/FRVSR_flowinit.pth, if any
    python -m bench.warp_psnr --checkpoints runs/flow/c16/FRVSR_flowinit.pth

Warp PSNR: the previous low-res frame warped onto the current one with the option's flow, PSNR over RGB in
[0, 1] with a 4-pixel border left out, mean over the consecutive pairs of every clip of a test list
(``evaluate``). Both shared test lists (``sep_testlist.txt`` of vsr_train and of the
Vimeo-90K sample), on clean bicubic x1/4 low-res and on that low-res H.264-encoded at CRF 23 (the maker
client_test.py uses: ``train.evaluate.lowres_frames``). Each option is run in fp32 and under bf16 autocast
(``--precisions``; ``make bench`` runs bf16 only, without the distilled checkpoints); ms/frame is one flow at
176x144 on ``--threads`` threads (median after warm-up). Options: no motion, the shipped default's flow, SPyNet
(BasicVSR's, our port) at full and at reduced resolution (``model.frvsr_spynet.ScaledSPyNet``, the flow the
frvsr-spynet architecture runs), and the FNet of each FRVSR checkpoint given with ``--checkpoints``.
The ``fnet-c16_*`` and ``fnet-quick_c12`` rows of ``bench/results/warp_psnr.md`` are FNets distilled from SPyNet
by a study that has left the product: they lost to SPyNet (its code and the command that made them,
``--out runs/flow/c16 --minutes 15 --fnet_channels 16``: ``git show e3f68d9:train/flow_distill.py``).
Writes ``bench/results/warp_psnr.md`` and ``.json`` (atomically).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from common.files import atomic_write_text
from common.paths import DEFAULT_MODEL, ROOT, VIMEO_SAMPLE, VSR_TRAIN, runs_dir
from model.checkpoint import load_checkpoint, read_checkpoint
from model.frvsr import flow_warp, pad_to_multiple
from model.frvsr_spynet import FRVSRSpyNetConfig, ScaledSPyNet
from model.inference import to_tensor
from model.precision import autocast, resolve_precision
from train.data import crop_to_scale, discover_samples, read_clip, split_samples
from train.degradations import EVAL_CRF
from train.evaluate import lowres_frames
from train.metrics import psnr_from_mse
from train.results import atomic_write_json

RESULTS = ROOT / "bench" / "results"
SHIPPED = DEFAULT_MODEL
PRECISIONS = ("fp32", "bf16")
REFERENCE = "spynet"  # the option whose gain over no motion the others are measured against
DEFAULT_DATASETS = (str(VSR_TRAIN), str(VIMEO_SAMPLE))  # the shared data: each one's test list
WARP_BORDER = 4  # pixels left out on each side of a warp-PSNR comparison: where the border clamp decides

# (cur, prev) (n, 3, h, w) in [0, 1] -> (n, 2, h, w) backward flow in low-res pixels, channel 0 = x,
# ``flow_warp(prev, flow) ~= cur`` (``model.frvsr``): SPyNet, an FNet, zero motion
FlowFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


# ----------------------------------------------------------------------------- warp PSNR


def pair_psnr(prev: torch.Tensor, cur: torch.Tensor, flow: torch.Tensor, border: int = WARP_BORDER) -> list[float]:
    """PSNR (dB, RGB in [0, 1]) of ``flow_warp(prev, flow)`` against ``cur``, per pair, ``border`` pixels left
    out on every side; ``inf`` where they are equal. prev, cur (n, 3, h, w), flow (n, 2, h, w)."""
    if prev.shape != cur.shape or flow.shape[0] != prev.shape[0]:
        raise ValueError(f"pair_psnr: prev {tuple(prev.shape)}, cur {tuple(cur.shape)}, flow {tuple(flow.shape)}")
    h, w = cur.shape[-2:]
    if h <= 2 * border or w <= 2 * border:
        raise ValueError(f"pair_psnr: {w}x{h} frames leave nothing inside a {border}-pixel border")
    warped = flow_warp(prev.float(), flow.float())  # (n, 3, h, w)
    # an all-zero flow is the identity exactly (the sampling grid's float rounding would leave ~1e-15 MSE)
    still = (flow == 0).flatten(1).all(dim=1).view(-1, 1, 1, 1)
    warped = torch.where(still, prev.float(), warped)
    inner = (..., slice(border, h - border), slice(border, w - border))
    mse = ((warped[inner] - cur.float()[inner]) ** 2).mean(dim=(1, 2, 3))  # (n,)
    return [psnr_from_mse(m) for m in mse.double().tolist()]


def zero_flow(cur: torch.Tensor, prev: torch.Tensor) -> torch.Tensor:
    """No motion: the identity warp."""
    return cur.new_zeros(cur.shape[0], 2, *cur.shape[-2:])


def fnet_flow(fnet: nn.Module, precision: str = "auto") -> FlowFn:
    """A model's ``fnet`` as ``FRVSR.flows`` calls it (frames padded by ``model.frvsr.pad_to_multiple``, flow in
    float32), under autocast at ``precision``, cropped back to the frames' size."""

    def flow(cur: torch.Tensor, prev: torch.Tensor) -> torch.Tensor:
        h, w = cur.shape[-2:]
        with autocast(resolve_precision(precision, cur.device), cur.device):
            out = fnet(pad_to_multiple(cur), pad_to_multiple(prev))
        return out.float()[..., :h, :w]

    return flow


@torch.no_grad()
def clip_warp_psnr(flow_fn: FlowFn, frames: np.ndarray, chunk: int = 8) -> list[float]:
    """Warp PSNR of every consecutive pair of uint8 (t, h, w, 3) ``frames`` (frame i-1 warped onto frame i)."""
    x = to_tensor(frames)  # (t, 3, h, w)
    out = []
    for s in range(1, len(x), chunk):
        cur, prev = x[s : s + chunk], x[s - 1 : s - 1 + chunk][: len(x[s : s + chunk])]
        out += pair_psnr(prev, cur, flow_fn(cur, prev))
    return out


def load_eval_clips(datasets: Sequence[str | Path], crf: int | None = None) -> dict[str, list[tuple[str, np.ndarray]]]:
    """The test list of each dataset folder (its ``sep_testlist.txt``) as uint8 (t, h, w, 3) low-res clips:
    bicubic x1/4 (``train.evaluate.lowres_frames``, the maker client_test.py uses), H.264 at ``crf`` when given.
    Keyed by the folder's name."""
    out = {}
    for root in datasets:
        _, test = split_samples(root, discover_samples(root), 0.2, 0)
        out[Path(root).name] = [
            (s.name, lowres_frames(to_tensor(crop_to_scale(read_clip(s))), "bicubic", s.name, crf)) for s in test
        ]
    return out


def evaluate(flow_fn: FlowFn, eval_clips: dict[str, list[tuple[str, np.ndarray]]]) -> dict[str, float]:
    """Mean warp PSNR over all consecutive pairs of each list's clips; ``mean``: the mean of the lists' means."""
    scores = {}
    for list_name, clips in eval_clips.items():
        pairs = [p for _, frames in clips for p in clip_warp_psnr(flow_fn, frames)]
        scores[list_name] = float(np.mean(pairs)) if pairs else math.nan
    scores["mean"] = float(np.mean(list(scores.values())))
    return scores


# ----------------------------------------------------------------------------- the options


def under(flow_fn: FlowFn, precision: str) -> FlowFn:
    """``flow_fn`` under autocast at ``precision``, its flow returned in float32."""

    def flow(cur: torch.Tensor, prev: torch.Tensor) -> torch.Tensor:
        with autocast(precision, cur.device):
            return flow_fn(cur, prev).float()

    return flow


def flow_ms(flow_fn: FlowFn, width: int = 176, height: int = 144, repeats: int = 15, warmup: int = 3) -> float:
    """Median milliseconds of one flow between two random ``width`` x ``height`` frames (tensors laid out as
    ``model.inference.to_tensor`` gives them to the model)."""
    rng = np.random.default_rng(0)
    cur, prev = (to_tensor(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))[None] for _ in range(2))
    times = []
    with torch.inference_mode():
        for i in range(warmup + repeats):
            t0 = time.perf_counter()
            flow_fn(cur, prev)
            if i >= warmup:
                times.append(1000 * (time.perf_counter() - t0))
    return statistics.median(times)


def options(checkpoints: list[Path]) -> list[tuple[str, str, Callable[[], FlowFn]]]:
    """(name, note, builder of the fp32 flow function) of every option whose weights are available."""
    out: list[tuple[str, str, Callable[[], FlowFn]]] = [("none", "no motion (identity warp)", lambda: zero_flow)]

    def fnet_of(path: Path) -> Callable[[], FlowFn]:
        def build() -> FlowFn:
            model, _ = load_checkpoint(path)  # NHWC weights, eval mode: as served
            return fnet_flow(model.fnet, "fp32")  # precision: applied outside (``under``)

        return build

    shipped_arch = None
    if SHIPPED.is_file():
        ck = read_checkpoint(SHIPPED)
        shipped_arch, cfg = ck["arch"], ck["model_args"]
        what = f"SPyNet at flow_scale {cfg['flow_scale']}" if "flow_scale" in cfg else f"FNet C={cfg['fnet_channels']}"
        note = f"the shipped default's flow (arch {shipped_arch}: {what}), as it runs inside FRVSR"
        out.append(("shipped", note, fnet_of(SHIPPED)))
    try:
        from model.spynet import load_spynet

        spynet = load_spynet().to(memory_format=torch.channels_last)
        out.append((REFERENCE, "BasicVSR's SPyNet (Vimeo-90K BIx4 weights), full low-res", lambda: spynet))

        def scaled(scale: float) -> FlowFn:
            """The flow the frvsr-spynet architecture runs (``ScaledSPyNet``) at ``scale``, the released weights."""
            net = ScaledSPyNet(scale)
            net.spynet.load_state_dict(spynet.state_dict())
            return net.eval().to(memory_format=torch.channels_last)

        for scale in (0.5, 0.75):
            note = f"the same on the pair resized by {scale} (model.frvsr_spynet.ScaledSPyNet), flow resized back"
            out.append((f"spynet-x{scale}", note, lambda scale=scale: scaled(scale)))
        note = f"arch frvsr-spynet's flow: SPyNet at flow_scale {FRVSRSpyNetConfig.flow_scale} (model/frvsr_spynet.py)"
        if shipped_arch != "frvsr-spynet":  # else the shipped row is this flow already
            out.append(("frvsr-spynet", note, lambda: scaled(FRVSRSpyNetConfig.flow_scale)))
    except (ModuleNotFoundError, FileNotFoundError) as e:
        print(f"SPyNet left out: {e}", file=sys.stderr)
    for path in checkpoints:
        ck = read_checkpoint(path)
        d = ck.get("distill", {})
        note = (
            f"distilled FNet C={ck['model_args']['fnet_channels']}, teacher on {d.get('teacher_input', '?')} pairs, "
            f"{ck.get('step', '?')} steps"
        )
        out.append((f"fnet-{path.parent.name}", note, fnet_of(path)))
    return out


def run(datasets: list[str], checkpoints: list[Path], threads: int, precisions: tuple[str, ...] = PRECISIONS) -> dict:
    """Every option's warp PSNR (at each of ``precisions``, clean and CRF) and ms/frame; see the module docstring."""
    torch.set_num_threads(threads)
    eval_sets = {"clean": load_eval_clips(datasets), f"crf{EVAL_CRF}": load_eval_clips(datasets, EVAL_CRF)}
    rows = []
    for name, note, build in options(checkpoints):
        fn = build()
        row = {"option": name, "note": note, "threads": threads, "ms": {}, "warp_psnr": {}}
        for precision in precisions:
            f = under(fn, precision)
            row["ms"][precision] = flow_ms(f)
            row["warp_psnr"][precision] = {cond: evaluate(f, clips) for cond, clips in eval_sets.items()}
        print(f"{name}: {json.dumps(row['ms'])} {json.dumps(row['warp_psnr'])}", file=sys.stderr)
        rows.append(row)
    add_gain_fractions(rows)
    lists = {cond: {k: len(v) for k, v in clips.items()} for cond, clips in eval_sets.items()}
    return {
        "rows": rows, "clips": lists, "threads": threads, "reference": REFERENCE, "crf": EVAL_CRF,
        "precisions": list(precisions),
    }  # fmt: skip


def add_gain_fractions(rows: list[dict]) -> None:
    """Each row's gain over no motion as a fraction of the reference's (SPyNet in fp32, or at the row's precision
    when fp32 was not run), per precision and condition, on the mean of the lists."""
    by = {r["option"]: r for r in rows}
    if "none" not in by or REFERENCE not in by:
        return
    for r in rows:
        r["fraction"] = {}
        for precision, conds in r["warp_psnr"].items():
            r["fraction"][precision] = {}
            at = "fp32" if "fp32" in by[REFERENCE]["warp_psnr"] else precision
            for cond, scores in conds.items():
                base = by["none"]["warp_psnr"][at][cond]["mean"]
                ref = by[REFERENCE]["warp_psnr"][at][cond]["mean"]
                r["fraction"][precision][cond] = (scores["mean"] - base) / (ref - base) if ref != base else float("nan")


def markdown(result: dict, title: str = "# Warp PSNR of the flow options") -> str:
    rows = result["rows"]
    precisions = result.get("precisions", list(PRECISIONS))
    first = precisions[0]
    conds = list(rows[0]["warp_psnr"][first]) if rows else []
    lists = [k for k in rows[0]["warp_psnr"][first][conds[0]] if k != "mean"] if rows else []
    ref = "fp32" if "fp32" in precisions else "the same precision"
    sub = "#" * (len(title) - len(title.lstrip("#")) + 1)  # one level below the title
    lines = [
        title,
        "",
        "`python -m bench.warp_psnr`: previous low-res frame warped onto the current one, PSNR (dB) over RGB with a "
        "4-pixel border left out, mean over all consecutive pairs of each test list "
        f"({', '.join(f'{k}: {v} clips' for k, v in result['clips']['clean'].items())}); "
        f"clean = bicubic x1/4, crf{result['crf']} = that low-res H.264-encoded (libx264 yuv420p). "
        f"ms = one flow at 176x144, {result['threads']} thread(s), median. "
        f"gain = fraction of {result['reference']} ({ref})'s gain over no motion, mean of the lists.",
        "",
    ]
    for precision in precisions:
        head = ["option"] + [f"ms {p}" for p in precisions]
        for c in conds:
            head += [f"{lst} {c}" for lst in lists] + [f"mean {c}", f"gain {c}"]
        lines += [f"{sub} Flow computed in {precision}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for r in rows:
            cells = [r["option"]] + [f"{r['ms'][p]:.1f}" for p in precisions]
            for c in conds:
                s = r["warp_psnr"][precision][c]
                frac = r.get("fraction", {}).get(precision, {}).get(c)
                cells += [f"{s[lst]:.2f}" for lst in lists] + [f"{s['mean']:.2f}"]
                cells.append(f"{100 * frac:.0f} %" if frac is not None else "")
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    lines += ["Options:", ""] + [f"- `{r['option']}`: {r['note']}" for r in rows] + [""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.warp_psnr", description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoints", nargs="*", type=Path, default=None, help="FRVSR checkpoints whose FNet "
                        "to score (default: every runs/flow/*/FRVSR_flowinit.pth)")  # fmt: skip
    parser.add_argument("--datasets", nargs="+", default=list(DEFAULT_DATASETS))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--precisions", nargs="+", choices=PRECISIONS, default=list(PRECISIONS))
    parser.add_argument("--out", type=Path, default=RESULTS / "warp_psnr", help="path without suffix: .md and .json")
    args = parser.parse_args(argv)
    missing = [d for d in args.datasets if not Path(d).is_dir()]
    if missing:
        print(f"skipped: the test data is not here ({', '.join(missing)}); it lives in ../shared/data")
        return 0
    checkpoints = args.checkpoints
    if checkpoints is None:
        checkpoints = sorted(p for p in (runs_dir() / "flow").glob("*/FRVSR_flowinit.pth") if p.parent.name != "best")
    result = run(args.datasets, checkpoints, args.threads, tuple(args.precisions))
    atomic_write_json(args.out.with_suffix(".json"), result)
    atomic_write_text(args.out.with_suffix(".md"), markdown(result))
    print(markdown(result))
    print(args.out.with_suffix(".md"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
