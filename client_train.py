"""Train FRVSR on a folder of clips; writes runs/models/{uuid}/ and runs/metric/trial.txt.

    python client_train.py --dataset_path ../shared/data/vimeo90k_sample \
        --annotation_data "{'advance_settings': {'max_minutes': 3}}"
    torchrun --nproc_per_node=2 client_train.py --dataset_path ...   # multi-process (DDP)
    # continue a run from its last validation (after Ctrl-C, a crash or the end of a session):
    python client_train.py --dataset_path ... --annotation_data "{'advance_settings': {'resume': 'runs/models/<uuid>'}}"
    python client_train.py --dataset_path ... --trial_name gan --annotation_data \
        "{'advance_settings': {'gan': True, 'init_from': 'runs/models/<uuid>/FRVSR_GAN_default.pth', 'lr': 5e-5}}"
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset_path", required=True, help="folder of clips (seed layout or Vimeo-90K layout)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    p.add_argument("--trial_name", default="trial", help="names the checkpoint FRVSR_GAN_{trial_name}.pth")
    p.add_argument(
        "--annotation_data",
        default="{'advance_settings':{}}",
        help="dict (Python literal or JSON) whose 'advance_settings' override training settings",
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    rank = int(os.environ.get("RANK", "0"))
    logging.basicConfig(
        level=logging.INFO if rank == 0 else logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )

    from tqdm import tqdm

    from train.config import TrainConfig, parse_annotation_data
    from train.data import DataError
    from train.trainer import train

    try:
        settings = parse_annotation_data(args.annotation_data)
        cfg = TrainConfig.from_settings(settings)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    stop = {"requested": False}

    def on_signal(signum, frame):  # first Ctrl-C: finish cleanly; second: abort
        if stop["requested"]:
            raise KeyboardInterrupt
        stop["requested"] = True
        print(
            "\nstopping: validating and writing the best checkpoint and trial.txt (Ctrl-C again to abort)",
            file=sys.stderr,
        )

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    bar = tqdm(unit="step", dynamic_ncols=True, disable=rank != 0 or None)

    def on_step(s: dict) -> None:
        bar.update(1)
        extra = {"d_loss": f"{s['d_loss']:.3f}"} if "d_loss" in s else {}  # GAN stage: the discriminator's hinge loss
        bar.set_postfix(
            epoch=s["epoch"], loss=f"{s['loss']:.5f}", psnr=f"{s['psnr']:.2f}", lr=f"{s['lr']:.1e}", **extra
        )

    try:
        trial = train(
            args.dataset_path,
            cfg,
            args.trial_name,
            args.device,
            lambda: stop["requested"],
            on_step,
            given=set(settings),
        )
    except (DataError, ValueError, FileNotFoundError) as e:
        bar.close()
        print(f"error: {e}", file=sys.stderr)
        return 2
    bar.close()
    if trial is not None:
        ev = trial["eval_result"]["FRVSR_GAN"]["eval"]
        print(f"model: {trial['model_path']}\nvalidation PSNR {ev['PSNR']:.4f} dB, SSIM {ev['SSIM']:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())  # python puts this script's folder (the project root) first on sys.path
