"""FRVSR training: data loading, one optimisation step, validation and the keep rule, and the run itself
(``train``). Processes live in ``train.distributed``, resuming in ``train.resume``, the curves and the
trial in ``train.report``.

With ``gan`` on, the same run is FRVSR_GAN's adversarial stage: ``train.gan.GanStage`` takes the steps
and chooses the kept checkpoint; everything else is shared.

Runs as one process or under ``torchrun`` (DistributedDataParallel: gloo on CPU, NCCL on GPU). Only
rank 0 validates and writes files. Stopping (time budget, step budget, or a stop request such as
Ctrl-C) is agreed by all ranks at every step, so no process is left waiting in a collective.

A run can be continued (``resume``): every validation also writes ``resume.pt`` beside the kept
checkpoint (``train.resume``), and ``train`` with ``cfg.resume`` set to the run's folder picks it up there.
"""

from __future__ import annotations

import logging
import math
import os
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler

from model.checkpoint import ARCHS, arch_of, load_checkpoint, model_from, save_checkpoint
from model.frvsr import FRVSR
from model.precision import autocast, resolve_precision
from train.config import TrainConfig
from train.cputime import process_cpu_seconds
from train.data import Sample, TrainClips, discover_samples, read_train_clips, split_samples
from train.distributed import Ranks, agree, barrier, process_device, setup_distributed, shared_out_dir
from train.evaluate import evaluate_clips
from train.flows import FlowCache
from train.gan import GanStage
from train.losses import frvsr_loss
from train.metrics import Aggregate, Exact
from train.report import build_trial, plot_curves
from train.results import MODEL_NAME, atomic_write_json, trial_path
from train.resume import ResumeState, optimizer_to, restore, resume_settings, save_resume
from train.teacher_targets import run_targets

log = logging.getLogger(__name__)
T = TypeVar("T")

LOG_EVERY = 50  # steps between progress lines in train.log (runs in the background have no progress bar)


# ----------------------------------------------------------------------------- data and steps


def load_splits(dataset_path: str, cfg: TrainConfig) -> tuple[list[Sample], list[Sample]]:
    """Train and validation samples of ``dataset_path`` and every ``extra_datasets`` folder, each split
    by its own ``sep_trainlist.txt``/``sep_testlist.txt`` (or ``val_split``)."""
    train_samples, val_samples = [], []
    for root in [dataset_path, *cfg.extra_datasets]:
        t, v = split_samples(root, discover_samples(root, cfg.min_frames), cfg.val_split, cfg.seed)
        log.info("%s: %d train, %d validation samples", root, len(t), len(v))
        train_samples += t
        val_samples += v
    return train_samples, val_samples


def build_loader(cfg: TrainConfig, dataset: TrainClips, ranks: Ranks, first_step: int = 0) -> DataLoader:
    """Shuffled batches; the degradation (H.264 included) runs in ``cfg.workers`` worker processes.

    A single process draws the workers' seeds from torch's global generator (restored by ``resume``).
    Under torchrun every rank has the same global generator (same initial weights), so each rank's
    workers get their own generator, seeded by rank and step: otherwise all ranks would draw the same
    crops, flips and degradation recipes.
    """
    sampler = generator = None
    if ranks.active:
        sampler = DistributedSampler(dataset, ranks.world, ranks.rank, shuffle=True, seed=cfg.seed)
        generator = torch.Generator().manual_seed(cfg.seed + 1_000_003 * ranks.rank + first_step)
    return DataLoader(
        dataset,
        batch_size=cfg.batch_size,
        shuffle=sampler is None,
        sampler=sampler,
        drop_last=len(dataset) >= cfg.batch_size * ranks.world,
        num_workers=cfg.workers,
        persistent_workers=cfg.workers > 0,
        generator=generator,
    )


def train_step(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    lr: torch.Tensor,
    hr: torch.Tensor,
    cfg: TrainConfig,
    flows: torch.Tensor | None = None,
    teacher: torch.Tensor | None = None,
) -> dict:
    """One pixel-stage step: lr (b, t, 3, h, w), hr (b, t, 3, 4h, 4w), precomputed flows (b, t, 2, h, w) or None,
    the teacher's output (b, t, 3, 4h, 4w) with ``distill`` or None -> loss statistics."""
    optimizer.zero_grad(set_to_none=True)
    with autocast(resolve_precision(cfg.precision, lr.device), lr.device):  # forward only; backward follows its dtypes
        loss, stats = frvsr_loss(model, lr, hr, cfg.flow_loss_weight, flows, teacher, cfg.distill)
    loss.backward()
    if cfg.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
    optimizer.step()
    stats["loss"] = loss.item()
    return stats


def validation_scores(
    model: torch.nn.Module, samples: list[Sample], cfg: TrainConfig, device: torch.device, with_temporal: bool = False
) -> dict[str, float]:
    """Whole validation clips through the shared inference path, degraded as in training (deterministic
    per clip): the platform's {MSE, SSIMs, PSNR, SSIM}, plus ``tOF``, ``VMAF`` and ``VMAF_NEG`` with
    ``with_temporal`` (the GAN stage's curves)."""
    agg = Aggregate()
    for r in evaluate_clips(
        model, samples, cfg.degradation, device, with_temporal=with_temporal, precision=cfg.precision,
        with_perceptual=with_temporal,
    ):  # fmt: skip
        agg.add(r.model)
    if not with_temporal:
        return agg.result()
    return {**agg.result(), "tOF": agg.tof(), "VMAF": agg.vmaf(), "VMAF_NEG": agg.vmaf_neg()}


def build_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """Adam over the model; the flow network (``model.fnet``) at ``flow_lr_scale`` of the rate, or frozen (its
    parameters then need no gradient: nothing is back-propagated through it). At scale 1, one group, as runs
    written before the setting existed have it (their resume.pt holds one group's state)."""
    if cfg.flow_lr_scale == 1:
        return torch.optim.Adam(model.parameters(), lr=cfg.lr)
    flow = list(model.fnet.parameters())
    ids = {id(p) for p in flow}
    groups = [{"params": [p for p in model.parameters() if id(p) not in ids], "lr_scale": 1.0}]
    if cfg.flow_lr_scale > 0:
        groups.append({"params": flow, "lr_scale": cfg.flow_lr_scale})
    else:
        for p in flow:
            p.requires_grad_(False)
    return torch.optim.Adam(groups, lr=cfg.lr)


def cosine_lr(cfg: TrainConfig, progress: float, step: int = 0) -> float:
    """The learning rate at ``progress`` (0 to 1 of the step or time budget): cosine from ``lr`` to ``lr_min``,
    scaled by a linear ramp over the run's first ``warmup_steps`` steps (``step`` counts from 0)."""
    progress = min(max(progress, 0.0), 1.0)
    ramp = min(1.0, (step + 1) / cfg.warmup_steps) if cfg.warmup_steps > 0 else 1.0
    return ramp * (cfg.lr_min + (cfg.lr - cfg.lr_min) * 0.5 * (1 + math.cos(math.pi * progress)))


# ----------------------------------------------------------------------------- outputs


def safe_trial_name(name: str) -> str:
    cleaned = "".join(c if c.isalnum() or c in "-_." else "_" for c in name).strip("._")
    if not cleaned:
        raise ValueError(f"--trial_name {name!r} has no usable characters; use letters, digits, '-', '_'")
    return cleaned


def attach_log_file(path: Path) -> None:
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger().addHandler(handler)
    if logging.getLogger().level > logging.INFO:
        logging.getLogger().setLevel(logging.INFO)


# ----------------------------------------------------------------------------- the run's parts


@dataclass
class Run:
    """One training run's parts, passed to the steps of ``train`` instead of a long argument list."""

    cfg: TrainConfig
    trial_name: str
    ranks: Ranks
    device: torch.device
    model: FRVSR
    optimizer: torch.optim.Optimizer
    gan: GanStage | None
    val_samples: list[Sample]
    out_dir: Path
    state: ResumeState
    t_start: float
    cpu_start: float  # process_cpu_seconds() when this session started

    @property
    def ckpt_path(self) -> Path:
        return self.out_dir / f"{MODEL_NAME}_{self.trial_name}.pth"

    def elapsed(self) -> float:
        """Wall seconds of the whole run, earlier sessions of a resumed run included."""
        return self.state.elapsed + time.perf_counter() - self.t_start

    def cpu_seconds(self) -> float:
        """CPU seconds of the whole run's training processes, earlier sessions included."""
        return self.state.cpu_seconds + process_cpu_seconds() - self.cpu_start

    def snapshot(self) -> ResumeState:
        """The state as it stands now (this session's wall and CPU time counted in), for ``resume.pt``."""
        return replace(self.state, elapsed=self.elapsed(), cpu_seconds=self.cpu_seconds())

    def own_cpu_seconds(self) -> float:
        """CPU seconds of this run's own training (``cpu_seconds`` less what ``init_from`` brought)."""
        return self.cpu_seconds() - self.state.inherited_cpu_seconds

    def progress(self, total_steps: int) -> float:
        """How far through its budgets the run is, 0 to 1: the steps, the wall time of training, the CPU time."""
        cfg, state = self.cfg, self.state
        wall = state.train_time / (cfg.max_minutes * 60) if cfg.max_minutes else 0.0
        cpu = self.own_cpu_seconds() / (cfg.max_cpu_minutes * 60) if cfg.max_cpu_minutes else 0.0
        return max(state.step / total_steps, wall, cpu)

    def over_budget(self, total_steps: int) -> bool:
        budget_s, cpu_s = self.cfg.max_minutes * 60, self.cfg.max_cpu_minutes * 60
        return (
            self.state.step >= total_steps
            or (budget_s > 0 and self.elapsed() >= budget_s)
            or (cpu_s > 0 and self.own_cpu_seconds() >= cpu_s)
        )


# ----------------------------------------------------------------------------- validation


def validate(run: Run) -> None:
    """Rank 0 scores the validation clips, keeps the checkpoint if it is the one to keep (the best PSNR;
    the GAN stage's own rule), and writes ``resume.pt``."""
    cfg, state = run.cfg, run.state
    if run.ranks.main:
        t0 = time.perf_counter()
        scores = validation_scores(run.model, run.val_samples, cfg, run.device, with_temporal=cfg.gan)
        state.valid_time += time.perf_counter() - t0
        cpu = run.cpu_seconds()  # one reading for both figures
        tof = {}
        if cfg.gan:
            tof = {"val_tof": scores["tOF"], "val_vmaf": scores["VMAF"], "val_vmaf_neg": scores["VMAF_NEG"]}
        state.history.append(
            {
                "epoch": state.epoch,
                "step": state.step,
                "val_psnr": scores["PSNR"],
                "val_ssim": scores["SSIM"],
                **tof,
                "cpu_seconds": cpu,
                "own_cpu_seconds": cpu - state.inherited_cpu_seconds,
            }  # fmt: skip
        )
        if run.gan is not None:
            keep = run.gan.keep(scores, state.best_scores)
        else:
            keep = state.best_scores is None or scores["PSNR"] > state.best_psnr or math.isnan(state.best_psnr)
        if keep:
            state.best_psnr, state.best_scores = scores["PSNR"], scores
            save_checkpoint(
                run.ckpt_path, run.model, epoch=state.epoch, step=state.step, eval=scores,
                train_settings=cfg.settings(), cpu_seconds=run.cpu_seconds(), counted_targets=state.counted_targets,
            )  # fmt: skip
            if run.gan is not None:
                run.gan.save(run.ckpt_path, epoch=state.epoch, step=state.step)
        save_resume(
            run.out_dir, run.model, run.optimizer, run.snapshot(), run.trial_name, cfg,
            run.gan.state_dict() if run.gan is not None else None,
        )  # fmt: skip
        tof_text = ""
        if "tOF" in scores:
            tof_text = f" tOF {scores['tOF']:.4f} VMAF {scores['VMAF']:.2f} VMAF NEG {scores['VMAF_NEG']:.2f}"
        log.info(
            "epoch %d step %d: val PSNR %.4f dB SSIM %.4f%s (%s %.4f)",
            state.epoch,
            state.step,
            scores["PSNR"],
            scores["SSIM"],
            tof_text,
            "kept" if cfg.gan else "best",
            state.best_psnr,
        )
    barrier(run.ranks)


def score_reference(run: Run) -> None:
    """GAN stage: rank 0 scores the starting model once; the stage measures the PSNR drop from it."""
    if run.ranks.main:
        t0 = time.perf_counter()
        scores = validation_scores(run.model, run.val_samples, run.cfg, run.device, with_temporal=True)
        run.state.valid_time += time.perf_counter() - t0
        run.gan.set_reference(scores)
        run.state.history.append(
            {
                "epoch": 0,
                "step": 0,
                "val_psnr": scores["PSNR"],
                "val_ssim": scores["SSIM"],
                "val_tof": scores["tOF"],
                "val_vmaf": scores["VMAF"],
                "val_vmaf_neg": scores["VMAF_NEG"],
            }  # fmt: skip
        )
    barrier(run.ranks)


# ----------------------------------------------------------------------------- the run


def main_first(ranks: Ranks, compute: Callable[[], T]) -> T:
    """``compute`` a cache on rank 0 first, then on the other ranks, which find it: one computation under torchrun."""
    if ranks.main:
        out = compute()
    barrier(ranks)
    return out if ranks.main else compute()


def build_run(
    dataset_path: str,
    cfg: TrainConfig,
    trial_name: str,
    device_name: str,
    ranks: Ranks,
    saved: dict | None,
    t_start: float,
) -> tuple[Run, DataLoader]:
    """Data, model, optimiser (and GAN stage), output folder; a resumed run is put back where it stopped."""
    device = process_device(device_name, ranks)
    torch.set_num_threads(cfg.threads or max(1, (os.cpu_count() or 1) // ranks.world))
    random.seed(cfg.seed + ranks.rank)
    np.random.seed(cfg.seed + ranks.rank)
    torch.manual_seed(cfg.seed)  # same initial weights on every rank

    train_samples, val_samples = load_splits(dataset_path, cfg)

    inherited_cpu, inherited_targets = 0.0, []
    if saved is not None:
        model = model_from(saved)  # the run's own architecture and weights
    elif cfg.init_from:
        model, init = load_checkpoint(cfg.init_from, channels_last=False)
        inherited_cpu = float(init.get("cpu_seconds", 0.0))  # training time goes on counting across init_from
        inherited_targets = list(init.get("counted_targets", []))
        log.info("initialised from %s (%s; %.2f CPU-h of training)", cfg.init_from, model.cfg, inherited_cpu / 3600)
    else:
        model = ARCHS[cfg.arch][1](cfg.model)
        if hasattr(model, "load_released_flow"):  # frvsr-spynet: the pretrained SPyNet, not random weights
            model.load_released_flow()
            log.info("flow: BasicVSR's released SPyNet")
    if model.cfg != cfg.model:  # a file's network wins: the settings (settings.json, resume.pt) say what trains
        cfg = replace(cfg, arch=arch_of(model), model=model.cfg)
    optimizer = build_optimizer(model, cfg)
    gan = GanStage.build(cfg, device) if cfg.gan else None
    clip_frames = read_train_clips(train_samples, cfg.crop_size)
    flows, flow_cpu = None, 0.0
    if cfg.flow_cache:  # the frozen flow's flows, once per clip (train.flows); their CPU time is this run's too
        cache = FlowCache(model.fnet, resolve_precision(cfg.precision, device))
        flows, flow_cpu = main_first(
            ranks, lambda: cache.load_or_compute([s.frames for s in train_samples], clip_frames)
        )
    targets, targets_cpu, targets_key = None, 0.0, None
    if cfg.distill:  # the teacher's output of each clip (train.teacher_targets): its CPU time is carried like
        # init_from's (in the model's CPU-hours, not in this run's own budget: a one-time cost of about a CPU-hour
        # that every run on the same clips shares would otherwise eat most of a study arm's schedule)
        t0 = time.perf_counter()
        targets, targets_cpu, targets_key = main_first(ranks, lambda: run_targets(cfg, train_samples, clip_frames))
        t_start += time.perf_counter() - t0  # nor in its wall-clock budget (max_minutes)
        if targets_key in inherited_targets:  # init_from's CPU-hours hold them already
            log.info("teacher targets %s: counted in init_from's CPU time already", targets_key)
            targets_cpu = 0.0
    clips = TrainClips(
        train_samples, cfg.num_frames, cfg.crop_size, cfg.degradation, cfg.crops_per_clip, clip_frames, flows, targets
    )
    if saved is not None:
        state = restore(saved, optimizer, gan, ranks)
    else:
        carried = inherited_cpu + targets_cpu
        counted = inherited_targets + ([targets_key] if targets_key and targets_key not in inherited_targets else [])
        state = ResumeState(cpu_seconds=carried + flow_cpu, inherited_cpu_seconds=carried, counted_targets=counted)
    loader = build_loader(cfg, clips, ranks, state.step)
    model = model.to(device, memory_format=torch.channels_last).train()  # NHWC: faster convolutions (oneDNN, cuDNN)
    optimizer_to(optimizer, device)
    log.info("precision %s", resolve_precision(cfg.precision, device))

    out_dir = Path(cfg.resume).resolve() if cfg.resume else shared_out_dir(ranks)
    run = Run(
        cfg, trial_name, ranks, device, model, optimizer, gan, val_samples, out_dir, state, t_start,
        process_cpu_seconds(),
    )  # fmt: skip
    if ranks.main:
        attach_log_file(out_dir / "train.log")
        if saved is None:
            settings = {
                "trial_name": trial_name,
                "device": device_name,
                "world_size": ranks.world,
                **cfg.settings(),
                "model_args": asdict(model.cfg),
            }
            atomic_write_json(out_dir / "settings.json", Exact(settings))  # a 5e-5 learning rate stays 5e-5
            log.info("writing to %s; settings %s", out_dir, cfg.settings())
        else:
            log.info(
                "resuming %s at step %d (session %d); settings %s", out_dir, state.step, state.sessions, cfg.settings()
            )
    return run, loader


def run_epochs(
    run: Run, loader: DataLoader, stop_requested: Callable[[], bool], on_step: Callable[[dict], None] | None
) -> None:
    """Steps until the step or time budget is spent or a stop is requested; validate every ``val_every``
    epochs and at the end."""
    cfg, state, ranks = run.cfg, run.state, run.ranks
    net = DistributedDataParallel(run.model) if ranks.active else run.model
    total_steps = cfg.epochs * max(1, len(loader))
    stop = run.over_budget(total_steps)
    while not stop:
        if isinstance(loader.sampler, DistributedSampler):
            loader.sampler.set_epoch(state.epoch)
        losses = []
        t_epoch = time.perf_counter()
        for lr_batch, hr_batch, *extra in loader:  # then flows (b, t, 2, h, w) with flow_cache, targets with distill
            progress = run.progress(total_steps)
            for group in run.optimizer.param_groups:
                group["lr"] = cosine_lr(cfg, progress, state.step) * group.get("lr_scale", 1.0)
            lr_batch, hr_batch = lr_batch.to(run.device), hr_batch.to(run.device)
            t0 = time.perf_counter()
            if run.gan is not None:
                stats = run.gan.step(net, run.optimizer, lr_batch, hr_batch)
            else:
                given = extra.pop(0).to(run.device) if cfg.flow_cache else None
                teacher = extra.pop(0).to(run.device) if cfg.distill else None
                stats = train_step(net, run.optimizer, lr_batch, hr_batch, cfg, given, teacher)
            state.train_time += time.perf_counter() - t0
            state.step += 1
            losses.append(stats["loss"])
            lr_now = run.optimizer.param_groups[0]["lr"]
            if ranks.main and on_step:
                on_step({**stats, "step": state.step, "epoch": state.epoch, "lr": lr_now})
            if ranks.main and state.step % LOG_EVERY == 0:
                log.info(
                    "step %d epoch %d: loss %.5f psnr %.2f lr %.2e, %.2f s/step (training), %.1f min elapsed, "
                    "%.3f CPU-h in all",
                    state.step,
                    state.epoch,
                    stats["loss"],
                    stats["psnr"],
                    lr_now,
                    state.train_time / state.step,
                    run.elapsed() / 60,
                    run.cpu_seconds() / 3600,
                )
            stop = agree(ranks, run.over_budget(total_steps) or stop_requested(), run.device)
            if stop:
                break
        state.epoch += 1
        if losses:
            state.history.append(
                {
                    "epoch": state.epoch,
                    "step": state.step,
                    "loss": float(np.mean(losses)),
                    "epoch_seconds": time.perf_counter() - t_epoch,
                }
            )
        if stop or state.epoch % cfg.val_every == 0:
            validate(run)
            stop = agree(ranks, stop or stop_requested(), run.device)


def train(
    dataset_path: str,
    cfg: TrainConfig,
    trial_name: str,
    device: str = "cpu",
    stop_requested: Callable[[], bool] = lambda: False,
    on_step: Callable[[dict], None] | None = None,
    given: set[str] | None = None,
) -> dict | None:
    """Train, keep the best checkpoint, write the model folder and ``runs/metric/trial.txt``.

    Returns the trial dict on rank 0 (None on other ranks). ``stop_requested`` is polled every step
    (Ctrl-C in the CLI); ``on_step`` receives step stats on rank 0 (the CLI's progress bar). With
    ``cfg.resume`` the run continues in its own folder from its last validation: ``given`` names the
    settings the user set (only ``RESUMABLE_OVERRIDES`` may differ from the run's own).
    """
    t_start = time.perf_counter()
    saved = None
    if cfg.resume:
        cfg, saved = resume_settings(cfg, given or set())
        trial_name = saved["trial_name"]
    trial_name = safe_trial_name(trial_name)
    ranks = setup_distributed(device)
    try:
        run, loader = build_run(dataset_path, cfg, trial_name, device, ranks, saved, t_start)
        if cfg.gan and cfg.init_from and saved is None:
            score_reference(run)
        run_epochs(run, loader, stop_requested, on_step)
        trial = None
        if ranks.main:
            plot_curves(run.state.history, run.out_dir / "training_curves.png")
            atomic_write_json(run.out_dir / "history.json", run.state.history)
            state = run.state
            trial = build_trial(
                trial_name,
                run.out_dir,
                {**run.cfg.settings(), "model_args": asdict(run.model.cfg)},
                state.best_scores or {},
                {"total": run.elapsed(), "train_time": state.train_time, "valid_time": state.valid_time},
            )
            atomic_write_json(trial_path(), trial)
            log.info(
                "best validation PSNR %.4f dB; %.2f CPU-hours of training in all; trial written to %s",
                state.best_psnr, run.cpu_seconds() / 3600, trial_path(),
            )  # fmt: skip
        barrier(ranks)  # ranks tear gloo down together: one leaving while another still talks aborts it
        return trial
    finally:
        if ranks.active:
            torch.distributed.destroy_process_group()
