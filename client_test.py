"""Evaluate a trained FRVSR checkpoint (and plain bicubic) on a folder of clips.

Writes runs/models/{new uuid}/evaluation_{unix_ts}.xlsx and runs/metric/trial.txt.

The clean input is the platform's definition: the high-res clip downscaled x1/4 (bicubic, or the BD blur
for a model trained on it). Each ``--crf`` adds the same metrics on that low-res clip after a real H.264
encode and decode at that CRF (libx264, yuv420p, deterministic): model and bicubic see the same decoded
frames. trial.txt carries them as ``test_h264_crf{N}`` beside ``test``; the xlsx as sheet ``h264_crf{N}``.

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
    p.add_argument(
        "--dataset_path",
        required=True,
        help="folder of clips; on a Vimeo-90K folder with sep_testlist.txt only those clips",
    )
    p.add_argument(
        "--model_path",
        default=str(DEFAULT_MODEL_PATH),
        help="folder holding the checkpoint (default: the shipped model)",
    )
    p.add_argument("--used_model", default=DEFAULT_USED_MODEL, help="checkpoint file name inside --model_path")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    p.add_argument(
        "--crf",
        type=int,
        nargs="*",
        default=None,
        help="also score with the low-res input H.264-compressed at these CRFs (default: 23, "
        "train.degradations.EVAL_CRF; --crf alone: clean only)",
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    import time
    import uuid

    import torch
    from tqdm import tqdm

    from handler.settings import resolve_device
    from model.checkpoint import load_checkpoint
    from train.data import DataError, discover_samples, read_list
    from train.degradations import EVAL_CRF
    from train.evaluate import evaluate_clips
    from train.metrics import json_safe
    from train.report import build_test_trial, summarize, write_workbook
    from train.results import atomic_write_json, runs_dir, trial_path

    t_start = time.perf_counter()
    try:
        device = resolve_device(args.device)
        ckpt_path = Path(args.model_path) / args.used_model
        model, ckpt = load_checkpoint(ckpt_path, device)
        # the platform's clean input: BI, or BD for a model trained on BD ('realistic' models are scored on BI)
        degradation = "blur" if ckpt.get("train_settings", {}).get("degradation") == "blur" else "bicubic"
        if args.crf is None:
            args.crf = [EVAL_CRF]
        if any(not 0 <= c <= 51 for c in args.crf):
            raise ValueError(f"--crf values must be in 0..51 (x264's range), got {args.crf}")
        samples = discover_samples(args.dataset_path, min_frames=2)
        test_list = read_list(Path(args.dataset_path), "sep_testlist.txt")
        if test_list is not None:
            chosen = [s for s in samples if s.name in set(test_list)]
            if not chosen:
                raise DataError(
                    f"none of the clips in {args.dataset_path}/sep_testlist.txt were found under {args.dataset_path}"
                )
            samples = chosen
        torch.set_num_threads(os.cpu_count() or 1)
        runs = {}  # condition -> results: None = the clean input, else the CRF
        for crf in [None, *dict.fromkeys(args.crf)]:
            label = "clean input" if crf is None else f"H.264 CRF {crf} input"
            runs[crf] = list(
                tqdm(
                    evaluate_clips(
                        model, samples, degradation, device, with_bicubic=True, with_y=True, with_temporal=True, crf=crf
                    ),
                    total=len(samples),
                    unit="clip",
                    desc=label,
                )
            )
    except (DataError, ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    summaries = {crf: summarize(res) for crf, res in runs.items()}
    out_dir = runs_dir() / "models" / str(uuid.uuid4())
    xlsx_name = f"evaluation_{int(time.time())}.xlsx"
    seconds = time.perf_counter() - t_start
    info = {
        "model": ckpt_path.resolve(),
        "dataset": Path(args.dataset_path).resolve(),
        "degradation": degradation,
        "compressed input": f"H.264 CRF {args.crf} (libx264 yuv420p)" if args.crf else "none",
        "device": device,
        "model_args": ckpt.get("model_args"),
        "seconds": round(seconds, 2),
    }
    sheets = {f"h264_crf{crf}": (runs[crf], summaries[crf]) for crf in runs if crf is not None}
    write_workbook(out_dir / xlsx_name, runs[None], summaries[None], info, sheets)
    extra = {f"test_h264_crf{crf}": summaries[crf] for crf in runs if crf is not None}
    atomic_write_json(trial_path(), build_test_trial(out_dir, xlsx_name, summaries[None], seconds, extra))

    print(f"{len(samples)} clips, {seconds:.1f} s")
    print(f"{'input':14s} {'':8s} {'PSNR':>8s} {'PSNR_Y':>8s} {'SSIM':>7s} {'tOF':>7s} {'PSNR clip mean':>15s}")
    for crf, summ in summaries.items():
        m, b = json_safe(summ["FRVSR_GAN"]), json_safe(summ["Bicubic"])
        for name, s in (("model", m), ("bicubic", b)):
            tof = f"{s['tOF']:7.4f}" if s["tOF"] is not None else f"{'n/a':>7s}"  # json_safe turns nan into None
            cond = "clean" if crf is None else f"H.264 CRF {crf}"
            print(
                f"{cond:14s} {name:8s} {s['PSNR']:8.4f} {s['PSNR_Y']:8.4f} {s['SSIM']:7.4f} {tof} "
                f"{s['PSNR_clip_mean']:15.4f}"
            )
        print(
            f"{'':14s} {'gain':8s} {m['PSNR'] - b['PSNR']:+8.4f} {m['PSNR_Y'] - b['PSNR_Y']:+8.4f} "
            f"{m['SSIM'] - b['SSIM']:+7.4f}"
        )
    print(f"report: {out_dir / xlsx_name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())  # python puts this script's folder (the project root) first on sys.path
