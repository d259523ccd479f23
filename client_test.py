"""Evaluate a trained FRVSR checkpoint (and plain bicubic) on a folder of clips.

Writes runs/models/{new uuid}/evaluation_{unix_ts}.xlsx and runs/metric/trial.txt. trial.txt holds the platform's
MSE, SSIMs, PSNR and SSIM; the workbook and the printed table also PSNR_Y, tOF, VMAF, VMAF NEG and BRISQUE (the
ground truth's too), defined in train.metrics.

The clean input is the platform's definition: the high-res clip downscaled x1/4 (bicubic, or the BD blur
for a model trained on it). Each ``--crf`` adds the same metrics on that low-res clip after a real H.264
encode and decode at that CRF (libx264, yuv420p, deterministic): model and bicubic see the same decoded
frames. trial.txt carries them as ``test_h264_crf{N}`` beside ``test``; the xlsx as sheet ``h264_crf{N}``.
A checkpoint holding a clean and a compressed-input model (``model.variants``) is scored as it is served:
the clean input by the clean model, each H.264 clip by the one the server would choose for that upload.
The models are loaded by the server's loader (``model.quantize.load_for_serving``) at ``--precision``: ``auto``
(the default) is what a server runs on this machine (int8 where the CPU and the checkpoint allow it).

    python client_test.py --dataset_path ../shared/data/vimeo90k_sample \
        --model_path runs/models/<uuid> --used_model FRVSR_GAN_trial.pth
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
import uuid
from pathlib import Path

from common.paths import DEFAULT_MODEL_FILE, PRETRAINED_DIR, runs_dir
from model.precision import PRECISIONS


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--dataset_path", required=True,
        help="folder of clips; on a Vimeo-90K folder with sep_testlist.txt only those clips",
    )  # fmt: skip
    p.add_argument(
        "--model_path", default=str(PRETRAINED_DIR), help="folder holding the checkpoint (default: the shipped model)"
    )
    p.add_argument("--used_model", default=DEFAULT_MODEL_FILE, help="checkpoint file name inside --model_path")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    p.add_argument(
        "--precision", default="auto", choices=list(PRECISIONS),
        help="what the models run at, as the server would load them (default auto: the server's choice here)",
    )  # fmt: skip
    p.add_argument(
        "--crf", type=int, nargs="*", default=None,
        help="also score with the low-res input H.264-compressed at these CRFs (default: 23, "
        "train.degradations.EVAL_CRF; --crf alone: clean only)",
    )  # fmt: skip
    return p.parse_args(argv)


def _cell(v: float | None, width: int, fmt: str = ".4f") -> str:
    return f"{'n/a':>{width}s}" if v is None else f"{v:{width}{fmt}}"  # json_safe turns nan into None


def print_table(summaries: dict, n_clips: int, seconds: float) -> None:
    from train.metrics import json_safe
    from train.report import GROUND_TRUTH

    print(f"{n_clips} clips, {seconds:.1f} s")
    print(
        f"{'input':14s} {'':8s} {'PSNR':>8s} {'PSNR_Y':>8s} {'SSIM':>7s} {'tOF':>7s} {'VMAF':>7s} {'VMAF_NEG':>8s} "
        f"{'BRISQUE':>7s} {'PSNR clip mean':>15s}"
    )
    for crf, summ in summaries.items():
        m, b = json_safe(summ["FRVSR_GAN"]), json_safe(summ["Bicubic"])
        cond = "clean" if crf is None else f"H.264 CRF {crf}"
        for name, s in (("model", m), ("bicubic", b)):
            print(
                f"{cond:14s} {name:8s} {s['PSNR']:8.4f} {s['PSNR_Y']:8.4f} {s['SSIM']:7.4f} {_cell(s['tOF'], 7)} "
                f"{_cell(s['VMAF'], 7, '.2f')} {_cell(s['VMAF_NEG'], 8, '.2f')} {_cell(s['BRISQUE'], 7, '.2f')} "
                f"{s['PSNR_clip_mean']:15.4f}"
            )
        print(
            f"{'':14s} {'gain':8s} {m['PSNR'] - b['PSNR']:+8.4f} {m['PSNR_Y'] - b['PSNR_Y']:+8.4f} "
            f"{m['SSIM'] - b['SSIM']:+7.4f}"
        )
    gt = json_safe(summaries[None][GROUND_TRUTH])["BRISQUE"]  # the same clips under every condition
    print(f"{'ground truth':23s} BRISQUE {_cell(gt, 7, '.2f')} (lower is more natural; nearer it is better)")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    import torch
    from tqdm import tqdm

    from model.checkpoint import read_checkpoint
    from model.quantize import load_for_serving
    from model.runtime import resolve_device
    from train.data import DataError
    from train.degradations import EVAL_CRF
    from train.evaluate import check_crfs, clean_degradation, evaluate_conditions, test_samples
    from train.report import write_test_results

    t_start = time.perf_counter()
    try:
        device = resolve_device(args.device)
        ckpt_path = Path(args.model_path) / args.used_model
        models, precision, why = load_for_serving(ckpt_path, args.precision, device)
        logging.getLogger("client_test").info("precision %s (%s)", precision, why)
        ckpt = read_checkpoint(ckpt_path)
        degradation = clean_degradation(ckpt)
        crfs = check_crfs([EVAL_CRF] if args.crf is None else args.crf)
        samples = test_samples(args.dataset_path)
        torch.set_num_threads(os.cpu_count() or 1)

        def bar(results, label: str):
            return tqdm(results, total=len(samples), unit="clip", desc=label)

        runs = evaluate_conditions(models, samples, degradation, device, crfs, bar, precision, with_perceptual=True)
    except (DataError, ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    seconds = time.perf_counter() - t_start
    info = {
        "model": ckpt_path.resolve(),
        "dataset": Path(args.dataset_path).resolve(),
        "degradation": degradation,
        "compressed input": f"H.264 CRF {crfs} (libx264 yuv420p)" if crfs else "none",
        "device": device,
        "model_args": ckpt.get("model_args"),
        "models": (
            f"clean and compressed-input variants, chosen per clip by {models.rule}" if models.paired else "one"
        ),
        "seconds": round(seconds, 2),
    }
    out_dir = runs_dir() / "models" / str(uuid.uuid4())
    xlsx, summaries = write_test_results(out_dir, runs, info, seconds, int(time.time()))
    print_table(summaries, len(samples), seconds)
    print(f"report: {xlsx}")
    return 0


if __name__ == "__main__":
    sys.exit(main())  # python puts this script's folder (the project root) first on sys.path
