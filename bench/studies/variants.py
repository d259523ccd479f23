"""Clean vs compressed-input model, and the automatic choice between them, on both shared test lists.

For a checkpoint holding both (``model.variants``), every clip of each test list is degraded once per
condition (clean BI, then H.264 at each CRF, the maker ``client_test.py`` uses: ``train.evaluate``), and
the same decoded frames go to bicubic, the clean model, the compressed-input model and any ``--also``
model. "auto" is what the server would serve with no ``input_quality``: per clip, the variant the
checkpoint's rule picks from the upload's codec and bits per pixel. Platform PSNR (of the mean MSE, RGB).

    python -m bench.studies.variants --model model/pretrained/FRVSR_GAN_default.pth \
        --also shipped=runs/old_default.pth --crf 12 15 18 23 28 32

Saves ``bench/results/variants.{json,md}`` (``--out`` to change); not part of every ``make bench`` (about
10 minutes a model on one core).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from bench.saved import save_result
from common.paths import ROOT, TEST_LISTS
from model.inference import super_resolve, to_tensor
from model.quantize import load_for_serving
from model.variants import CLEAN, COMPRESSED, InputRule
from train.data import bicubic_upscale, crop_to_scale, read_clip
from train.evaluate import lowres_input, test_samples
from train.metrics import mse, psnr_from_mse

log = logging.getLogger(__name__)
CRFS = (12, 15, 18, 23, 28, 32)


def served(path: Path) -> tuple[nn.Module, str]:
    """A single checkpoint's clean-input model as a server prepares it, and its precision."""
    models, precision, _ = load_for_serving(path)
    return models.models[CLEAN], precision


def clip_scores(nets: dict[str, tuple[nn.Module, str]], samples: list, crf: int | None) -> list[dict]:
    """Per clip of ``samples``, degraded once (clean, or H.264 at ``crf``), the same decoded frames to bicubic and
    every (model, precision) of ``nets``: its codec, bits per pixel and each one's MSE."""
    out = []
    for s in samples:
        clip = crop_to_scale(read_clip(s))
        gt = clip.astype(np.float64) / 255.0
        lr, codec, bpp = lowres_input(to_tensor(clip), "bicubic", s.name, crf)
        sq = {"bicubic": mse(bicubic_upscale(to_tensor(lr)).mul(255).round().div(255), gt)}
        for name, (net, at) in nets.items():
            sr = np.stack(list(super_resolve(net, lr, precision=at)))
            sq[name] = mse(sr.astype(np.float64) / 255.0, gt)
        out.append({"clip": s.name, "codec": codec, "bpp": bpp, "mse": sq})
    return out


def score(paths: dict[str, Path], crfs: tuple[int, ...], lists: dict[str, Path]) -> dict[str, dict[str, float]]:
    """Single checkpoints' gains over bicubic (platform PSNR of the mean MSE) per list, clean and at each CRF:
    ``{name: {"<list> clean": dB, "<list> crf<N>": dB, ...}}``."""
    nets = {name: served(p) for name, p in paths.items()}
    gains: dict[str, dict[str, float]] = {name: {} for name in nets}
    for list_name, folder in lists.items():
        samples = test_samples(folder)
        for crf in [None, *crfs]:
            clips = clip_scores(nets, samples, crf)
            bic = psnr_from_mse(float(np.mean([c["mse"]["bicubic"] for c in clips])))
            for name in nets:
                key = f"{list_name} {'clean' if crf is None else f'crf{crf}'}"
                gains[name][key] = psnr_from_mse(float(np.mean([c["mse"][name] for c in clips]))) - bic
            log.info("%s %s: %s", list_name, crf, {n: round(g[key], 3) for n, g in gains.items()})
    return gains


def run(model_path: Path, also: dict[str, Path], crfs: tuple[int, ...], lists: dict[str, Path]) -> dict:
    models, precision, _ = load_for_serving(model_path)  # each model as a server runs it, at its precision
    if not models.paired:
        raise ValueError(f"{model_path} holds one model; pair two with python -m model.commands pair")
    nets = {name: (net, precision) for name, net in models.models.items()}  # the two and the rule's blends
    nets.update({name: served(p) for name, p in also.items()})
    out: dict = {"model": str(model_path), "rule": str(models.rule), "also": {k: str(v) for k, v in also.items()}}
    for list_name, folder in lists.items():
        samples = test_samples(folder)
        rows = {}
        for crf in [None, *crfs]:
            clips = clip_scores(nets, samples, crf)
            picks = [models.rule.choose(c["codec"], c["bpp"]) for c in clips]
            for c, pick in zip(clips, picks, strict=True):
                c["mse"]["auto"] = c["mse"][pick]
                del c["codec"]
            bpps = [c["bpp"] for c in clips]
            key = "clean" if crf is None else f"crf{crf}"
            row = {name: psnr_from_mse(float(np.mean([c["mse"][name] for c in clips]))) for name in clips[0]["mse"]}
            row["bpp"] = None if crf is None else [min(bpps), max(bpps)]
            row["auto_picks"] = {q: picks.count(q) for q in sorted(set(picks))}
            row["clips"] = clips  # per clip: its bits per pixel and every model's MSE (to try other thresholds)
            rows[key] = row
            log.info("%s %s: %s", list_name, key, {k: round(v, 3) for k, v in row.items() if isinstance(v, float)})
        out[list_name] = rows
    return out


def rescore(res: dict, rule: InputRule) -> dict:
    """``res`` with "auto" recomputed for another rule, from the per-clip numbers (no model is run)."""
    for list_name in [k for k in TEST_LISTS if k in res]:
        for row in res[list_name].values():
            picks = [rule.choose("h264" if c["bpp"] is not None else None, c["bpp"]) for c in row["clips"]]
            mses = [c["mse"][pick] for c, pick in zip(row["clips"], picks, strict=True)]
            row["auto"] = psnr_from_mse(float(np.mean(mses)))
            row["auto_picks"] = {q: picks.count(q) for q in sorted(set(picks))}
    res["rule"] = str(rule)
    return res


def markdown(res: dict) -> str:
    lists = [k for k in TEST_LISTS if k in res]
    names = [n for n in res[lists[0]]["clean"] if n not in ("bicubic", "bpp", "auto_picks", "clips")]
    lines = [
        f"Model: `{res['model']}`; {res['rule']}. Gains over bicubic on the same decoded frames, platform PSNR "
        "(dB). auto: what the server serves with no `input_quality`.",
        "",
        "| list | input | bpp | bicubic | " + " | ".join(names) + " | auto picks | auto vs better of the two |",
        "|---|---|---|---:|" + "---:|" * len(names) + "---|---:|",
    ]
    for list_name in lists:
        for key, row in res[list_name].items():
            bic = row["bicubic"]
            bpp = "-" if row["bpp"] is None else f"{row['bpp'][0]:.2f}-{row['bpp'][1]:.2f}"
            gains = " | ".join(f"{row[n] - bic:+.3f}" for n in names)
            best = max(row[CLEAN], row[COMPRESSED])
            picks = ", ".join(f"{q} {n}" for q, n in row["auto_picks"].items())
            lines.append(f"| {list_name} | {key} | {bpp} | {bic:.3f} | {gains} | {picks} | {row['auto'] - best:+.3f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.studies.variants", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", type=Path, help="a checkpoint holding both variants")
    p.add_argument("--rescore", type=Path, help="a saved JSON: recompute auto for --clean_min_bpp, run nothing")
    p.add_argument("--clean_min_bpp", type=float, default=None)
    p.add_argument("--also", nargs="*", default=[], help="NAME=PATH: other single models scored on the same frames")
    p.add_argument("--crf", type=int, nargs="*", default=list(CRFS))
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "variants")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--lists", nargs="*", default=list(TEST_LISTS), choices=list(TEST_LISTS), help="default: both")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if a.rescore:
        res = rescore(json.loads(a.rescore.read_text()), InputRule(a.clean_min_bpp or InputRule.clean_min_bpp))
        save_result(a.out, res, markdown(res))
        return 0
    if a.model is None:
        p.error("--model is required (or --rescore)")
    missing = [str(f) for f in TEST_LISTS.values() if not f.is_dir()]
    if missing:
        print(f"skipped: the shared test lists are not here ({', '.join(missing)})", file=sys.stderr)
        return 0
    torch.set_num_threads(a.threads)
    also = dict(item.split("=", 1) for item in a.also)
    t0 = time.perf_counter()
    res = run(a.model, {k: Path(v) for k, v in also.items()}, tuple(a.crf), {k: TEST_LISTS[k] for k in a.lists})
    res["seconds"] = round(time.perf_counter() - t0, 1)
    save_result(a.out, res, markdown(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
