"""A clip split into two halves run at once, one per core (issue 29): what the boundary costs, and what it saves.

The recurrence is serial: frame t's SRNet needs frame t-1's output, so one clip never fills two cores (the
budget's idle row). Split at the middle, each half is a recurrence of its own; the second half starts ``warm``
frames early, those outputs dropped, so that its estimate is not cold at the boundary. The first half's frames
are the whole run's (the recurrence is causal), so the cost is all in the second half.

- Quality: every clip of both shared test lists, clean (bicubic x1/4) and H.264 at ``--crf``, the model the
  server's rule picks per clip, as served (``load_for_serving``); platform PSNR (of the mean MSE) of the whole
  run and of the split at each ``--warm``. A Vimeo clip has 7 frames: its split is at frame 3, and a warm-up of 3
  or more frames is the whole run again.
- Time: the model alone (no decode, no encode) over a moving synthetic 150-frame clip, the served way (one
  recurrence, the worker's 2 torch threads, the flow 2 frames ahead) against the two halves at once (a thread
  each, one torch thread each, the flow in line), in interleaved rounds.

    python -m bench.studies.clip_split --model model/pretrained/FRVSR_GAN_default.pth --warm 0 2 4 --crf 23

Saves ``bench/results/clip_split.{json,md}``; not part of every ``make bench`` (about 10 minutes). Each arm runs once
before the timed rounds, so that the int8 programs compile for its threads first: a compile in one thread beside
the other thread's run of the same programs hung the served pipeline's first try of the split (docs/results.md).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from bench.saved import save_result
from common.paths import ROOT, TEST_LISTS
from model.inference import super_resolve, to_tensor
from model.quantize import load_for_serving
from model.variants import CLEAN
from testing.clips import moving_clip
from train.data import bicubic_upscale, crop_to_scale, read_clip
from train.evaluate import lowres_input, test_samples
from train.metrics import mse, psnr_from_mse
from video.settings import HandlerSettings

log = logging.getLogger(__name__)


def split_outputs(
    run: Callable[[np.ndarray], np.ndarray], frames: np.ndarray, warm: int, whole: np.ndarray | None = None
) -> np.ndarray:
    """``run`` (frames -> outputs, one recurrence) over the two halves of ``frames``, the second starting ``warm``
    frames early with those outputs dropped: the outputs of every frame, in order. ``whole``: the whole run's
    outputs, if at hand: the first half's are its first frames (the recurrence is causal), so it is not run."""
    mid = len(frames) // 2
    start = max(0, mid - warm)
    first = whole[:mid] if whole is not None else run(frames[:mid])
    return np.concatenate([first, run(frames[start:])[mid - start :]])


def quality(models, precision: str, warms: list[int], crfs: list[int]) -> dict:
    """{"<list> clean" | "<list> crf<N>": {"bicubic", "whole", "warm<k>": platform PSNR, "frames": [...]}}."""
    out = {}
    for list_name, folder in TEST_LISTS.items():
        for crf in [None, *crfs]:
            sq: dict[str, list[float]] = {"bicubic": [], "whole": [], **{f"warm{k}": [] for k in warms}}
            frames = []
            for s in test_samples(folder):
                clip = crop_to_scale(read_clip(s))
                gt = clip.astype(np.float64) / 255.0
                lr, codec, bpp = lowres_input(to_tensor(clip), "bicubic", s.name, crf)
                net = models.models[models.rule.choose(codec, bpp)]

                def run(x: np.ndarray, net: nn.Module = net) -> np.ndarray:
                    return np.stack(list(super_resolve(net, x, precision=precision)))

                sq["bicubic"].append(mse(bicubic_upscale(to_tensor(lr)).mul(255).round().div(255), gt))
                whole = run(lr)
                sq["whole"].append(mse(whole.astype(np.float64) / 255.0, gt))
                for k in warms:
                    split = split_outputs(run, lr, k, whole)
                    sq[f"warm{k}"].append(mse(split.astype(np.float64) / 255.0, gt))
                frames.append(len(lr))
            key = f"{list_name} {'clean' if crf is None else f'crf{crf}'}"
            out[key] = {name: psnr_from_mse(float(np.mean(v))) for name, v in sq.items()}
            out[key]["frames"] = frames
            log.info("%s: %s", key, {k: round(v, 4) for k, v in out[key].items() if k != "frames"})
    return out


def timing(net: nn.Module, precision: str, size: tuple[int, int], frames: int, warm: int, rounds: int) -> dict:
    """Wall and CPU seconds of the model over a ``frames``-frame clip of ``size`` (w, h): served vs split."""
    w, h = size
    clip = moving_clip(frames, h, w, seed=1)

    def served(x: np.ndarray) -> None:
        torch.set_num_threads(2)
        for _ in super_resolve(net, iter(x), precision=precision, flow_ahead=HandlerSettings.flow_ahead):
            pass

    def split(x: np.ndarray) -> None:
        torch.set_num_threads(1)
        mid = len(x) // 2
        halves = [x[:mid], x[max(0, mid - warm) :]]
        with ThreadPoolExecutor(max_workers=2) as pool:  # .result(): a half that fails fails the round
            runs = [pool.submit(lambda p: list(super_resolve(net, iter(p), precision=precision)), p) for p in halves]
            for r in runs:
                r.result()

    arms = {"served": served, "split": split}
    for f in arms.values():  # first use at this size: kernel selection, Inductor's compile
        f(clip[:12])
    res: dict[str, list] = {name: [] for name in arms}
    for r in range(rounds):
        for name in list(arms) if r % 2 == 0 else list(arms)[::-1]:
            t0, c0 = time.perf_counter(), time.process_time()
            arms[name](clip)
            res[name].append({"wall_s": time.perf_counter() - t0, "cpu_s": time.process_time() - c0})
            log.info("%dx%d round %d %s: %.2f s wall, %.2f s CPU", w, h, r + 1, name, *res[name][-1].values())
    return res


def markdown(res: dict) -> str:
    warms = [k for k in next(iter(res["quality"].values())) if k.startswith("warm")]
    lines = [
        f"Model: `{res['model']}` (precision {res['precision']}); `python -m bench.studies.clip_split` "
        f"({res['when']}). Platform PSNR (dB) of the whole run and of the clip split in two halves, the second "
        "starting k frames early; the served model per clip (the rule's pick).",
        "",
        "| list | input | frames a clip | whole | " + " | ".join(f"split, k={k[4:]}" for k in warms) + " |",
        "|---|---|---|---:|" + "---:|" * len(warms),
    ]
    for key, row in res["quality"].items():
        list_name, cond = key.split()
        n = row["frames"]
        cells = " | ".join(f"{row[k]:.3f} ({row[k] - row['whole']:+.4f})" for k in warms)
        lines.append(f"| {list_name} | {cond} | {min(n)}-{max(n)} | {row['whole']:.3f} | {cells} |")
    lines += [
        "",
        f"Model alone, {res['frames']} frames, k={res['timing_warm']}: wall s per round (CPU s).",
        "",
        "| size | served (2 threads, flow ahead) | split (2 halves at once, 1 thread each) |",
        "|---|---|---|",
    ]
    for size, arms in res["timing"].items():
        cells = [", ".join(f"{r['wall_s']:.2f} ({r['cpu_s']:.1f})" for r in arms[name]) for name in ("served", "split")]
        lines.append(f"| {size} | {cells[0]} | {cells[1]} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.studies.clip_split", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", type=Path, default=ROOT / "model" / "pretrained" / "FRVSR_GAN_default.pth")
    p.add_argument("--warm", type=int, nargs="+", default=[0, 2, 4], help="frames the second half starts early")
    p.add_argument("--crf", type=int, nargs="*", default=[23])
    p.add_argument("--sizes", nargs="*", default=["176x144", "200x200"], help="WIDTHxHEIGHT for the timing")
    p.add_argument("--frames", type=int, default=150)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "clip_split")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    missing = [str(f) for f in TEST_LISTS.values() if not f.is_dir()]
    if missing:
        print(f"skipped: the shared test lists are not here ({', '.join(missing)})", file=sys.stderr)
        return 0
    models, precision, _ = load_for_serving(a.model)
    torch.set_num_threads(1)
    res = {
        "model": str(a.model),
        "precision": precision,
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "quality": quality(models, precision, a.warm, a.crf),
        "frames": a.frames,
        "timing_warm": max(a.warm),
    }
    sizes = [tuple(map(int, s.split("x"))) for s in a.sizes]
    res["timing"] = {f"{w}x{h}": timing(models.models[CLEAN], precision, (w, h), a.frames, max(a.warm), a.rounds)
                     for w, h in sizes}  # fmt: skip
    save_result(a.out, res, markdown(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
