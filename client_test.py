"""Evaluate a trained FRVSR checkpoint (and plain bicubic) on a folder of clips.

Writes runs/models/{new uuid}/evaluation_{unix_ts}.xlsx and runs/metric/trial.txt.

    python client_test.py --dataset_path ../shared/data/vimeo90k_sample \
        --model_path runs/models/<uuid> --used_model FRVSR_GAN_trial.pth
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_MODEL_PATH = HERE / "model" / "pretrained"
DEFAULT_USED_MODEL = "FRVSR_GAN_default.pth"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset_path", required=True, help="folder of clips; on a Vimeo-90K folder with sep_testlist.txt only those clips")
    p.add_argument("--model_path", default=str(DEFAULT_MODEL_PATH), help="folder holding the checkpoint (default: the shipped model)")
    p.add_argument("--used_model", default=DEFAULT_USED_MODEL, help="checkpoint file name inside --model_path")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    import time
    import uuid

    import torch
    from tqdm import tqdm

    from model.frvsr import load_checkpoint
    from train.data import DataError, discover_samples, read_list
    from train.evaluate import evaluate_clips
    from train.metrics import json_safe
    from train.report import build_test_trial, summarize, write_workbook
    from train.results import atomic_write_json, runs_dir, trial_path
    from train.trainer import Dist, resolve_device

    t_start = time.perf_counter()
    try:
        device = resolve_device(args.device, Dist())
        ckpt_path = Path(args.model_path) / args.used_model
        model, ckpt = load_checkpoint(ckpt_path, device)
        degradation = ckpt.get("train_settings", {}).get("degradation", "bicubic")
        samples = discover_samples(args.dataset_path, min_frames=2)
        test_list = read_list(Path(args.dataset_path), "sep_testlist.txt")
        if test_list is not None:
            chosen = [s for s in samples if s.name in set(test_list)]
            if not chosen:
                raise DataError(f"none of the clips in {args.dataset_path}/sep_testlist.txt were found under {args.dataset_path}")
            samples = chosen
        torch.set_num_threads(os.cpu_count() or 1)
        results = []
        for r in tqdm(evaluate_clips(model, samples, degradation, device, with_bicubic=True, with_y=True, with_temporal=True), total=len(samples), unit="clip"):
            results.append(r)
    except (DataError, ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    summary = summarize(results)
    out_dir = runs_dir() / "models" / str(uuid.uuid4())
    xlsx_name = f"evaluation_{int(time.time())}.xlsx"
    seconds = time.perf_counter() - t_start
    info = {"model": ckpt_path.resolve(), "dataset": Path(args.dataset_path).resolve(), "degradation": degradation, "device": device, "model_args": ckpt.get("model_args"), "seconds": round(seconds, 2)}
    write_workbook(out_dir / xlsx_name, results, summary, info)
    atomic_write_json(trial_path(), build_test_trial(out_dir, xlsx_name, summary, seconds))

    m, b = json_safe(summary["FRVSR_GAN"]), json_safe(summary["Bicubic"])
    print(f"{len(results)} clips, {seconds:.1f} s")
    print(f"{'':10s} {'PSNR':>8s} {'PSNR_Y':>8s} {'SSIM':>7s} {'tOF':>7s} {'PSNR clip mean':>15s}")
    for name, s in (("model", m), ("bicubic", b)):
        tof = f"{s['tOF']:7.4f}" if s["tOF"] is not None else f"{'n/a':>7s}"  # json_safe turns nan into None
        print(f"{name:10s} {s['PSNR']:8.4f} {s['PSNR_Y']:8.4f} {s['SSIM']:7.4f} {tof} {s['PSNR_clip_mean']:15.4f}")
    print(f"report: {out_dir / xlsx_name}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    sys.exit(main())
