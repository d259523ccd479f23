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

from bench.saved import save_result
from common.paths import ROOT, VIMEO_SAMPLE, VSR_TRAIN
from model.inference import super_resolve, to_tensor
from model.quantize import load_for_serving
from model.variants import CLEAN, COMPRESSED, InputRule
from train.data import bicubic_upscale, crop_to_scale, read_clip
from train.evaluate import lowres_input, test_samples
from train.metrics import mse, psnr_from_mse

log = logging.getLogger(__name__)
LISTS = {"vsr_train": VSR_TRAIN, "vimeo": VIMEO_SAMPLE}
CRFS = (12, 15, 18, 23, 28, 32)


def run(model_path: Path, also: dict[str, Path], crfs: tuple[int, ...], lists: dict[str, Path]) -> dict:
    models, precision, _ = load_for_serving(model_path)  # each model as a server runs it, at its precision
    if not models.paired:
        raise ValueError(f"{model_path} holds one model; pair two with python -m model.commands pair")
    nets = {CLEAN: (models.models[CLEAN], precision), COMPRESSED: (models.models[COMPRESSED], precision)}
    for name, p in also.items():
        served, also_precision, _ = load_for_serving(p)
        nets[name] = (served.models[CLEAN], also_precision)
    out: dict = {"model": str(model_path), "rule": str(models.rule), "also": {k: str(v) for k, v in also.items()}}
    for list_name, folder in lists.items():
        samples = test_samples(folder)
        rows = {}
        for crf in [None, *crfs]:
            sq = {name: [] for name in ["bicubic", *nets, "auto"]}  # per-clip MSE
            bpps, picks, clips = [], [], []
            for s in samples:
                clip = crop_to_scale(read_clip(s))
                gt = clip.astype(np.float64) / 255.0
                lr, codec, bpp = lowres_input(to_tensor(clip), "bicubic", s.name, crf)
                sq["bicubic"].append(mse(bicubic_upscale(to_tensor(lr)).mul(255).round().div(255), gt))
                for name, (net, at) in nets.items():
                    sr = np.stack(list(super_resolve(net, lr, precision=at)))
                    sq[name].append(mse(sr.astype(np.float64) / 255.0, gt))
                pick = models.rule.choose(codec, bpp)
                sq["auto"].append(sq[pick][-1])
                picks.append(pick)
                bpps.append(bpp)
                clips.append({"clip": s.name, "bpp": bpp, "mse": {k: v[-1] for k, v in sq.items()}})
            key = "clean" if crf is None else f"crf{crf}"
            row = {name: psnr_from_mse(float(np.mean(v))) for name, v in sq.items()}
            row["bpp"] = None if crf is None else [min(bpps), max(bpps)]
            row["auto_picks"] = {q: picks.count(q) for q in (CLEAN, COMPRESSED)}
            row["clips"] = clips  # per clip: its bits per pixel and every model's MSE (to try other thresholds)
            rows[key] = row
            log.info("%s %s: %s", list_name, key, {k: round(v, 3) for k, v in row.items() if isinstance(v, float)})
        out[list_name] = rows
    return out


def rescore(res: dict, rule: InputRule) -> dict:
    """``res`` with "auto" recomputed for another rule, from the per-clip numbers (no model is run)."""
    for list_name in [k for k in LISTS if k in res]:
        for row in res[list_name].values():
            picks = [rule.choose("h264" if c["bpp"] is not None else None, c["bpp"]) for c in row["clips"]]
            mses = [c["mse"][pick] for c, pick in zip(row["clips"], picks, strict=True)]
            row["auto"] = psnr_from_mse(float(np.mean(mses)))
            row["auto_picks"] = {q: picks.count(q) for q in (CLEAN, COMPRESSED)}
    res["rule"] = str(rule)
    return res


def markdown(res: dict) -> str:
    lists = [k for k in LISTS if k in res]
    names = [n for n in res[lists[0]]["clean"] if n not in ("bicubic", "bpp", "auto_picks", "clips")]
    lines = [
        f"Model: `{res['model']}`; {res['rule']}. Gains over bicubic on the same decoded frames, platform PSNR "
        "(dB). auto: what the server serves with no `input_quality`.",
        "",
        "| list | input | bpp | bicubic | " + " | ".join(names) + " | auto picks (clean/compr.) | auto vs better |",
        "|---|---|---|---:|" + "---:|" * len(names) + "---|---:|",
    ]
    for list_name in lists:
        for key, row in res[list_name].items():
            bic = row["bicubic"]
            bpp = "-" if row["bpp"] is None else f"{row['bpp'][0]:.2f}-{row['bpp'][1]:.2f}"
            gains = " | ".join(f"{row[n] - bic:+.3f}" for n in names)
            best = max(row[CLEAN], row[COMPRESSED])
            picks = row["auto_picks"]
            lines.append(
                f"| {list_name} | {key} | {bpp} | {bic:.3f} | {gains} | {picks[CLEAN]}/{picks[COMPRESSED]} | "
                f"{row['auto'] - best:+.3f} |"
            )
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
    p.add_argument("--lists", nargs="*", default=list(LISTS), choices=list(LISTS), help="test lists (default both)")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if a.rescore:
        res = rescore(json.loads(a.rescore.read_text()), InputRule(a.clean_min_bpp or InputRule.clean_min_bpp))
        save_result(a.out, res, markdown(res))
        return 0
    if a.model is None:
        p.error("--model is required (or --rescore)")
    missing = [str(f) for f in LISTS.values() if not f.is_dir()]
    if missing:
        print(f"skipped: the shared test lists are not here ({', '.join(missing)})", file=sys.stderr)
        return 0
    torch.set_num_threads(a.threads)
    also = dict(item.split("=", 1) for item in a.also)
    t0 = time.perf_counter()
    res = run(a.model, {k: Path(v) for k, v in also.items()}, tuple(a.crf), {k: LISTS[k] for k in a.lists})
    res["seconds"] = round(time.perf_counter() - t0, 1)
    save_result(a.out, res, markdown(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
