"""Training throughput: CPU-seconds per step, low-res pixels learned per CPU-second, and where a step's time goes,
beside a plain convolution stack's rate at the same width on the same core.

Three parts, all on the real training code:
- **The step** (``train.trainer.train_step`` on one fixed batch of real crops, no data loading): the recipe as
  it ran (SPyNet's flow computed in every step) against the frozen flow's flows given (``flow_cache``,
  ``train.flows``), and crop and batch shapes. CPU-seconds are the process's (``time.process_time``); one thread.
- **Where the time goes** (``torch.profiler`` over a few steps, self CPU time by operator family): the
  convolutions forward and backward, the flow (SPyNet's forward alone on the step's pairs), the warps
  (``grid_sample`` and its backward), the loss, the optimiser, everything else; and the loader's share from the
  trainer rows. Beside it: a stack of 16 plain 3x3 convolutions at the step's width and frame shape (bf16
  autocast, channels-last, forward and backward), in multiply-adds per second, and SRNet's own multiply-adds
  per CPU-second inside the step.
- **The run** (``train.trainer.train`` as ``client_train.py`` runs it, the loader and the degradation included):
  CPU-seconds per step counted the way a run counts them (``train.cputime``: the process and its DataLoader
  workers), timed from step ``WARM`` on.

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
from collections import defaultdict
from pathlib import Path

import torch
import torch.nn as nn
from torch.profiler import ProfilerActivity, profile

from bench.saved import save_result
from common.paths import ROOT, VSR_TRAIN
from model.checkpoint import ARCHS
from model.frvsr import SCALE
from model.precision import autocast
from train.config import TrainConfig
from train.cputime import process_cpu_seconds
from train.data import TrainClips, discover_samples, read_image, split_samples
from train.recipe import DEFAULT
from train.trainer import build_optimizer, train, train_step

log = logging.getLogger(__name__)
WARM = 3  # steps not timed
STEP_SETTINGS = [  # (label, changes to the recipe, flows given)
    ("the recipe: SPyNet in the step (today's run)", {}, False),
    ("flows given (flow_cache)", {"flow_cache": True}, True),
    ("flows given, crop 128", {"flow_cache": True, "crop_size": 128}, True),
    ("flows given, crop 256", {"flow_cache": True, "crop_size": 256}, True),
    ("flows given, batch 8", {"flow_cache": True, "batch_size": 8}, True),
]
RUN_SETTINGS = [  # (label, changes)
    ("the recipe, 1 worker (today's run)", {"workers": 1}),
    ("flow_cache, 1 worker", {"workers": 1, "flow_cache": True}),
    ("flow_cache, 0 workers", {"workers": 0, "flow_cache": True}),
]
FAMILIES = [  # (family, operator-name fragments), first match wins
    ("convolution backward", ("convolution_backward",)),
    ("convolution forward", ("mkldnn_convolution", "_convolution", "conv2d")),
    ("warps", ("grid_sampler",)),
    ("loss", ("mse_loss",)),
    ("optimiser", ("Optimizer.step", "_foreach", "adam")),
]


def recipe(**changes) -> TrainConfig:
    return TrainConfig.from_settings({**DEFAULT, "extra_datasets": [], "precision": "bf16", **changes})


def lr_pixels(cfg: TrainConfig) -> int:
    """Low-res pixels a step learns from: batch x frames x (crop / 4)^2."""
    return cfg.batch_size * cfg.num_frames * (cfg.crop_size // SCALE) ** 2


def srnet_macs(model: nn.Module, cfg: TrainConfig) -> float:
    """SRNet's multiply-adds in a step, forward and backward (~3x the forward's)."""
    per_px = sum(m.weight.numel() for m in model.srnet.modules() if isinstance(m, nn.Conv2d))
    return 3.0 * per_px * lr_pixels(cfg)


def batch_for(samples, cfg: TrainConfig, model: nn.Module) -> tuple[torch.Tensor, ...]:
    """One batch of real crops; with ``flow_cache`` the flows are the frozen SPyNet's on those crops (their
    values do not change a step's cost)."""
    clips = TrainClips(samples, cfg.num_frames, cfg.crop_size, "bicubic", cfg.crops_per_clip)
    lr, hr = next(iter(torch.utils.data.DataLoader(clips, batch_size=cfg.batch_size)))
    if not cfg.flow_cache:
        return lr, hr, None
    with torch.no_grad(), autocast("bf16", lr.device):
        flows = torch.stack(
            [torch.zeros_like(lr[:, 0, :2])]
            + [model.fnet(lr[:, i], lr[:, i - 1]).float() for i in range(1, lr.shape[1])],
            dim=1,
        )
    return lr, hr, flows


def timed_steps(model, opt, batch, cfg: TrainConfig, steps: int) -> float:
    """CPU-seconds per step of this process over ``steps`` steps, after ``WARM`` untimed ones."""
    lr, hr, flows = batch
    for _ in range(WARM):
        train_step(model, opt, lr, hr, cfg, flows)
    t0 = time.process_time()
    for _ in range(steps):
        train_step(model, opt, lr, hr, cfg, flows)
    return (time.process_time() - t0) / steps


def fresh(cfg: TrainConfig) -> tuple[nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = ARCHS[cfg.arch][1](cfg.model)
    model.load_released_flow()
    model = model.to(memory_format=torch.channels_last).train()
    return model, build_optimizer(model, cfg)


def step_rows(samples, steps: int) -> list[dict]:
    rows = []
    for label, changes, _ in STEP_SETTINGS:
        cfg = recipe(**changes)
        model, opt = fresh(cfg)
        cpu = timed_steps(model, opt, batch_for(samples, cfg, model), cfg, steps)
        rows.append(
            {
                "setting": label,
                "batch": cfg.batch_size,
                "crop": cfg.crop_size,
                "frames": cfg.num_frames,
                "cpu_s_per_step": cpu,
                "lr_px_per_cpu_s": lr_pixels(cfg) / cpu,
                "srnet_gmac_per_cpu_s": srnet_macs(model, cfg) / cpu / 1e9,
            }
        )
        log.info("%s: %s", label, rows[-1])
    return rows


def conv_stack_rate(width: int, batch: int, side: int, reps: int = 5) -> float:
    """G multiply-adds per CPU-second of 16 plain 3x3 convolutions (width -> width, ReLU between), forward and
    backward, bf16 autocast, channels-last, on (batch, width, side, side)."""
    net = nn.Sequential(*[nn.Sequential(nn.Conv2d(width, width, 3, padding=1), nn.ReLU()) for _ in range(16)])
    net = net.to(memory_format=torch.channels_last)
    x = torch.randn(batch, width, side, side).to(memory_format=torch.channels_last).requires_grad_()

    def once() -> None:
        with autocast("bf16", x.device):
            y = net(x)
        y.float().sum().backward()

    for _ in range(2):
        once()
    t0 = time.process_time()
    for _ in range(reps):
        once()
    macs = 3.0 * 16 * batch * side * side * width * width * 9
    return macs / ((time.process_time() - t0) / reps) / 1e9


def breakdown(samples, steps: int) -> dict:
    """Where the recipe's step spends its CPU time, by operator family, with the flow timed alone; and the plain
    convolution stack's rate at the step's width and frame shape."""
    cfg = recipe()
    model, opt = fresh(cfg)
    lr, hr, _ = batch_for(samples, cfg, model)
    cached_cfg = recipe(flow_cache=True)
    batch = batch_for(samples, cached_cfg, model)
    for _ in range(WARM):
        train_step(model, opt, *batch[:2], cached_cfg, batch[2])
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            train_step(model, opt, *batch[:2], cached_cfg, batch[2])
    families: dict[str, float] = defaultdict(float)
    total = 0.0
    for ev in prof.key_averages():
        us = ev.self_cpu_time_total
        total += us
        name = next((f for f, keys in FAMILIES if any(k in ev.key for k in keys)), "everything else")
        families[name] += us
    share = {k: v / 1e6 / steps for k, v in families.items()}  # CPU-s per step
    t0 = time.process_time()
    with torch.no_grad(), autocast("bf16", lr.device):
        for _ in range(steps):
            for i in range(1, lr.shape[1]):
                model.fnet(lr[:, i], lr[:, i - 1])
    share["flow (SPyNet forward)"] = (time.process_time() - t0) / steps
    return {
        "cpu_s_per_step": {k: share[k] for k in sorted(share, key=share.get, reverse=True)},
        "profiled_cpu_s_per_step": total / 1e6 / steps,
        "conv_stack_gmac_per_cpu_s": conv_stack_rate(cfg.model.channels, cfg.batch_size, cfg.crop_size // SCALE),
        "conv_stack_shape": [cfg.batch_size, cfg.model.channels, cfg.crop_size // SCALE, cfg.crop_size // SCALE],
    }


def worker(settings: dict, dataset: str, steps: int) -> None:
    """One timed run of the trainer; prints a JSON line."""
    marks: list[tuple[float, float]] = []
    cfg = TrainConfig.from_settings(settings)
    train(
        dataset,
        cfg,
        "throughput",
        "cpu",
        stop_requested=lambda: len(marks) >= steps,
        on_step=lambda s: marks.append((time.perf_counter(), process_cpu_seconds())),
    )
    (w0, c0), (w1, c1) = marks[WARM], marks[-1]
    n = len(marks) - 1 - WARM
    cpu = (c1 - c0) / n
    print(json.dumps({"s_per_step": (w1 - w0) / n, "cpu_s_per_step": cpu, "lr_px_per_cpu_s": lr_pixels(cfg) / cpu}))


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
        for label, changes in RUN_SETTINGS:
            settings = {**DEFAULT, "extra_datasets": [], "val_every": 10_000, "max_minutes": 0.0, **changes}
            cmd = [sys.executable, "-m", "bench.train_throughput", "worker", json.dumps(settings), str(small)]
            cmd.append(str(steps))
            out = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=1800)
            lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
            if out.returncode != 0 or not lines:
                raise RuntimeError(f"{label}: exit {out.returncode}\n{out.stderr[-2000:]}")
            rows.append({"setting": label, **json.loads(lines[-1])})
            log.info("%s: %s", label, rows[-1])
    return rows


def markdown(res: dict) -> str:
    base = res["step"][0]["lr_px_per_cpu_s"]
    lines = [
        "The training step alone (one fixed batch of real crops, clean bicubic; FRVSR 48-8-32 with BasicVSR's SPyNet",
        "at 0.625, frozen; 10 frames; bf16 autocast, channels-last, one thread):",
        "",
        "| setting | batch x crop | CPU-s/step | low-res px per CPU-s | vs today | SRNet G mult-adds per CPU-s |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for r in res["step"]:
        lines.append(
            f"| {r['setting']} | {r['batch']} x {r['crop']} | {r['cpu_s_per_step']:.3f} | "
            f"{r['lr_px_per_cpu_s'] / 1e3:.1f} k | {r['lr_px_per_cpu_s'] / base:.2f}x | "
            f"{r['srnet_gmac_per_cpu_s']:.0f} |"
        )
    b = res["breakdown"]
    lines += [
        "",
        "Where the recipe's step spends its CPU time (profiled with the flows given; SPyNet's forward on the same",
        "pairs timed alone; CPU-s per step):",
        "",
        "| part | CPU-s/step |",
        "|---|---:|",
    ]
    lines += [f"| {k} | {v:.3f} |" for k, v in b["cpu_s_per_step"].items()]
    shape = "x".join(str(s) for s in b["conv_stack_shape"])
    lines += [
        "",
        f"A stack of 16 plain 3x3 convolutions on {shape} (the step's width and frame shape), forward and backward, "
        f"in the same minutes: **{b['conv_stack_gmac_per_cpu_s']:.0f} G multiply-adds per CPU-second**.",
        "",
        "The whole trainer (`train.trainer.train`, the loader and the degradation included; CPU-seconds as a run",
        "counts them, the DataLoader workers included):",
        "",
        "| setting | wall s/step | CPU-s/step | low-res px per CPU-s | vs today |",
        "|---|---:|---:|---:|---:|",
    ]
    base_run = res["run"][0]["lr_px_per_cpu_s"]
    for r in res["run"]:
        lines.append(
            f"| {r['setting']} | {r['s_per_step']:.3f} | {r['cpu_s_per_step']:.3f} | "
            f"{r['lr_px_per_cpu_s'] / 1e3:.1f} k | {r['lr_px_per_cpu_s'] / base_run:.2f}x |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "worker":
        logging.basicConfig(level=logging.WARNING)
        torch.set_num_threads(1)
        worker(json.loads(argv[1]), argv[2], int(argv[3]))
        return 0
    p = argparse.ArgumentParser(prog="python -m bench.train_throughput", description=__doc__.split("\n\n")[0])
    p.add_argument("--step_steps", type=int, default=5, help="timed steps per step setting")
    p.add_argument("--run_steps", type=int, default=25, help="steps per trainer run (the first WARM are not timed)")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "train_throughput")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not VSR_TRAIN.is_dir():
        print(f"skipped: the shared training clips are not here ({VSR_TRAIN})", file=sys.stderr)
        return 0
    torch.set_num_threads(1)
    samples, _ = split_samples(VSR_TRAIN, discover_samples(VSR_TRAIN), 0.2, 0)
    biggest = max(recipe(**changes).crop_size for _, changes, _ in STEP_SETTINGS)
    samples = [s for s in samples if min(read_image(s.frames[0]).shape[:2]) >= biggest][:12]  # a batch's worth
    res = {
        "step": step_rows(samples, a.step_steps),
        "breakdown": breakdown(samples, a.step_steps),
        "run": run_rows(VSR_TRAIN, a.run_steps),
    }
    save_result(a.out, res, markdown(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
