"""Training throughput: windows per second and achieved GFLOP/s of the recipe's training step, per setting.

Two parts, both on the real training code:
- **The step** (``train.trainer.train_step`` on one fixed batch of real crops, no data loading): precision
  (fp32 vs bf16 autocast), memory format (NCHW vs channels-last, which the trainer uses), intra-op threads
  (1 vs 2), batch and crop shapes. FLOPs of a step (forward + backward) are counted once with
  ``torch.utils.flop_counter.FlopCounterMode``.
- **The run** (``train.trainer.train``, the loader and the degradation included, as ``client_train.py``
  runs it): one process with 1 or 2 threads and 0 or 1 DataLoader workers, vs ``torchrun`` with two
  processes of one thread each (DistributedDataParallel over gloo), on the realistic degradation (H.264
  in the data pipeline) and on clean bicubic. Windows/s = global batch x steps / wall seconds, timed from
  step ``WARM`` on (the first steps pay allocation and the workers' start).

    python -m bench.train_throughput            # ~10 minutes on the 2-core box; run it with nothing else running

Saves ``bench/results/train_throughput.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from bench.saved import save_result
from common.paths import ROOT, VSR_TRAIN
from model.checkpoint import ARCHS
from train.config import TrainConfig
from train.data import TrainClips, discover_samples, split_samples
from train.recipe import DEFAULT
from train.trainer import build_optimizer, train, train_step

log = logging.getLogger(__name__)
WARM = 3  # steps not timed
STEP_SETTINGS = [  # (label, changes to the recipe, threads, channels_last)
    ("fp32, NCHW, 1 thread", {"precision": "fp32"}, 1, False),
    ("fp32, channels-last, 1 thread", {"precision": "fp32"}, 1, True),
    ("bf16, NCHW, 1 thread", {"precision": "bf16"}, 1, False),
    ("bf16, channels-last, 1 thread (the run's)", {"precision": "bf16"}, 1, True),
    ("bf16, channels-last, 2 threads", {"precision": "bf16"}, 2, True),
    ("bf16, channels-last, 2 threads, batch 8", {"precision": "bf16", "batch_size": 8}, 2, True),
    ("bf16, channels-last, 1 thread, crop 128", {"precision": "bf16", "crop_size": 128}, 1, True),
]
RUN_SETTINGS = [  # (label, changes, processes)
    ("1 process, 1 thread, 1 worker (the run's)", {"threads": 1, "workers": 1}, 1),
    ("1 process, 1 thread, 0 workers", {"threads": 1, "workers": 0}, 1),
    ("1 process, 2 threads, 1 worker", {"threads": 2, "workers": 1}, 1),
    ("torchrun 2 processes x 1 thread, batch 2 each", {"threads": 1, "workers": 1, "batch_size": 2}, 2),
]


def recipe(**changes) -> TrainConfig:
    return TrainConfig.from_settings({**DEFAULT, "extra_datasets": [], **changes})


def step_rows(dataset: Path, steps: int) -> list[dict]:
    samples, _ = split_samples(dataset, discover_samples(dataset), 0.2, 0)
    rows = []
    for label, changes, threads, channels_last in STEP_SETTINGS:
        cfg = recipe(**changes)
        torch.set_num_threads(threads)
        clips = TrainClips(samples, cfg.num_frames, cfg.crop_size, "bicubic", cfg.crops_per_clip)
        lr, hr = next(iter(torch.utils.data.DataLoader(clips, batch_size=cfg.batch_size)))
        torch.manual_seed(0)
        model = ARCHS[cfg.arch][1](cfg.model).train()
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        opt = build_optimizer(model, cfg)
        with FlopCounterMode(display=False) as counter:
            train_step(model, opt, lr, hr, cfg)
        flops = counter.get_total_flops()
        for _ in range(WARM - 1):
            train_step(model, opt, lr, hr, cfg)
        t0 = time.perf_counter()
        for _ in range(steps):
            train_step(model, opt, lr, hr, cfg)
        s_step = (time.perf_counter() - t0) / steps
        rows.append(
            {
                "setting": label,
                "batch": cfg.batch_size,
                "crop": cfg.crop_size,
                "frames": cfg.num_frames,
                "s_per_step": s_step,
                "windows_per_s": cfg.batch_size / s_step,
                "gflop_per_step": flops / 1e9,
                "gflop_per_s": flops / 1e9 / s_step,
            }
        )
        log.info(
            "%s: %.3f s/step, %.2f windows/s, %.1f GFLOP/s",
            label,
            s_step,
            rows[-1]["windows_per_s"],
            rows[-1]["gflop_per_s"],
        )
    return rows


def worker(settings: dict, dataset: str, steps: int) -> None:
    """One timed run of the trainer (``torchrun`` starts this on every rank); rank 0 prints a JSON line."""
    times: list[float] = []
    cfg = TrainConfig.from_settings(settings)
    train(
        dataset,
        cfg,
        "throughput",
        "cpu",
        stop_requested=lambda: len(times) >= steps,
        on_step=lambda s: times.append(time.perf_counter()),
    )
    if times:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        timed = times[WARM:]
        s_step = (timed[-1] - timed[0]) / (len(timed) - 1)
        print(json.dumps({"s_per_step": s_step, "windows_per_s": cfg.batch_size * world / s_step, "steps": len(times)}))


def run_rows(dataset: Path, steps: int) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        # a small copy of the training split: the run's final validation (which the timing leaves out) stays short
        small = Path(tmp) / "data"
        for s in discover_samples(dataset)[:10]:
            (small / s.name).mkdir(parents=True)
            for f in s.frames:
                os.symlink(Path(f).resolve(), small / s.name / Path(f).name)
        env = {**os.environ, "FRVSR_RUNS_DIR": str(Path(tmp) / "runs"), "PYTHONPATH": str(ROOT)}
        for degradation in ("realistic", "bicubic"):
            for label, changes, procs in RUN_SETTINGS:
                settings = {**DEFAULT, "extra_datasets": [], "degradation": degradation, "val_every": 10_000, **changes}
                args = ["-m", "bench.train_throughput", "worker", json.dumps(settings), str(small), str(steps)]
                cmd = [sys.executable, *args]
                if procs > 1:
                    cmd = [
                        sys.executable,
                        "-m",
                        "torch.distributed.run",
                        f"--nproc_per_node={procs}",
                        "--master_port=29533",
                        *args,
                    ]
                out = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=1800)
                lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
                if out.returncode != 0 or not lines:
                    raise RuntimeError(f"{label}: exit {out.returncode}\n{out.stderr[-2000:]}")
                row = {"setting": label, "degradation": degradation, **json.loads(lines[-1])}
                log.info("%s, %s: %s", label, degradation, row)
                rows.append(row)
    return rows


def markdown(res: dict) -> str:
    lines = [
        "The training step alone (one fixed batch of real crops; FRVSR 48-8-32, frozen SPyNet at 0.625, 10 frames):",
        "",
        "| setting | batch x crop | s/step | windows/s | GFLOP/step | GFLOP/s |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for r in res["step"]:
        lines.append(
            f"| {r['setting']} | {r['batch']} x {r['crop']} | {r['s_per_step']:.3f} | {r['windows_per_s']:.2f} | "
            f"{r['gflop_per_step']:.0f} | {r['gflop_per_s']:.1f} |"
        )
    lines += ["", "The whole trainer (loader and degradation included; global batch 4):", "",
              "| setting | degradation | s/step | windows/s |", "|---|---|---:|---:|"]  # fmt: skip
    for r in res["run"]:
        lines.append(f"| {r['setting']} | {r['degradation']} | {r['s_per_step']:.3f} | {r['windows_per_s']:.2f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "worker":
        logging.basicConfig(level=logging.WARNING)
        worker(json.loads(argv[1]), argv[2], int(argv[3]))
        return 0
    p = argparse.ArgumentParser(prog="python -m bench.train_throughput", description=__doc__.split("\n\n")[0])
    p.add_argument("--step_steps", type=int, default=6, help="timed steps per step setting")
    p.add_argument("--run_steps", type=int, default=25, help="steps per trainer run (the first WARM are not timed)")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "train_throughput")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not VSR_TRAIN.is_dir():
        print(f"skipped: the shared training clips are not here ({VSR_TRAIN})", file=sys.stderr)
        return 0
    res = {"step": step_rows(VSR_TRAIN, a.step_steps), "run": run_rows(VSR_TRAIN, a.run_steps)}
    save_result(a.out, res, markdown(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
