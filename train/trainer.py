"""FRVSR training: processes, data loading, one optimisation step, validation, checkpoints, resuming,
and the run itself (``train``).

With ``gan`` on, the same run is FRVSR_GAN's adversarial stage: ``train.gan.GanStage`` takes the steps
and chooses the kept checkpoint; everything else is shared.

Runs as one process or under ``torchrun`` (DistributedDataParallel: gloo on CPU, NCCL on GPU). Only
rank 0 validates and writes files. Stopping (time budget, step budget, or a stop request such as
Ctrl-C) is agreed by all ranks at every step, so no process is left waiting in a collective.

A run can be continued (``resume``): every validation also writes ``resume.pt`` beside the kept
checkpoint (weights, optimiser, schedule position, step, RNG states, best-so-far and its scores), and
``train`` with ``cfg.resume`` set to the run's folder picks it up there.
"""

from __future__ import annotations

import logging
import math
import os
import random
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler

from handler.settings import resolve_device
from model.checkpoint import ARCHS, DEFAULT_ARCH, arch_of, cpu_state_dict, load_checkpoint, save_checkpoint, unwrap
from model.frvsr import FRVSR
from model.inference import autocast, resolve_precision
from train.config import TrainConfig
from train.data import Sample, TrainClips, discover_samples, split_samples
from train.evaluate import evaluate_clips
from train.gan import GanStage
from train.losses import frvsr_loss
from train.metrics import Aggregate
from train.report import build_trial
from train.results import MODEL_NAME, atomic_write_json, runs_dir, trial_path

log = logging.getLogger(__name__)

LOG_EVERY = 50  # steps between progress lines in train.log (runs in the background have no progress bar)
RESUME_FILE = "resume.pt"  # beside the kept checkpoint: everything needed to continue the run
RESUMABLE_OVERRIDES = ("max_minutes", "epochs", "threads", "workers", "val_every")  # may change on resume


# ----------------------------------------------------------------------------- processes


@dataclass
class Ranks:
    """This process's place in a torchrun group (a single process: rank 0 of 1)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1


def setup_distributed(device_name: str) -> Ranks:
    """Join the torchrun group if launched by torchrun (WORLD_SIZE > 1), else a single process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Ranks()
    ranks = Ranks(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))
    backend = "nccl" if device_name.startswith("cuda") else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(ranks.local_rank)
    dist.init_process_group(backend)
    return ranks


def process_device(device_name: str, ranks: Ranks) -> torch.device:
    """``resolve_device``, with each torchrun process on its own GPU (its local rank)."""
    device = resolve_device(device_name)
    if device.type == "cuda" and ranks.active:
        return torch.device("cuda", ranks.local_rank)
    return device


def agree(ranks: Ranks, flag: bool, device: torch.device) -> bool:
    """True on every rank if any rank wants to stop (the flag travels on ``device``: NCCL needs a GPU tensor)."""
    if not ranks.active:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


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
    model: torch.nn.Module, optimizer: torch.optim.Optimizer, lr: torch.Tensor, hr: torch.Tensor, cfg: TrainConfig
) -> dict:
    """One pixel-stage step: lr (b, t, 3, h, w), hr (b, t, 3, 4h, 4w) -> loss statistics."""
    optimizer.zero_grad(set_to_none=True)
    with autocast(resolve_precision(cfg.precision, lr.device), lr.device):  # forward only; backward follows its dtypes
        loss, stats = frvsr_loss(model, lr, hr, cfg.flow_loss_weight)
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
    per clip): the platform's {MSE, SSIMs, PSNR, SSIM}, plus ``tOF`` with ``with_temporal``."""
    agg = Aggregate()
    for r in evaluate_clips(
        model, samples, cfg.degradation, device, with_temporal=with_temporal, precision=cfg.precision
    ):
        agg.add(r.model)
    return {**agg.result(), "tOF": agg.tof()} if with_temporal else agg.result()


def cosine_lr(cfg: TrainConfig, progress: float) -> float:
    """The learning rate at ``progress`` (0 to 1 of the step or time budget): cosine from ``lr`` to ``lr_min``."""
    progress = min(max(progress, 0.0), 1.0)
    return cfg.lr_min + (cfg.lr - cfg.lr_min) * 0.5 * (1 + math.cos(math.pi * progress))


# ----------------------------------------------------------------------------- outputs


def plot_curves(history: list[dict], path: Path) -> None:
    """Training loss and validation PSNR against steps, as a PNG (atomically)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
    steps = [h["step"] for h in history if "loss" in h]
    a1.plot(steps, [h["loss"] for h in history if "loss" in h])
    a1.set(xlabel="step", ylabel="training loss (epoch mean)", yscale="log", title="loss")
    val = [h for h in history if "val_psnr" in h]
    a2.plot([h["step"] for h in val], [h["val_psnr"] for h in val], marker="o")
    gan_title = "validation PSNR (step 0: the GAN stage's starting model)"
    a2.set(xlabel="step", ylabel="PSNR (dB)", title=gan_title if val and val[0]["step"] == 0 else "validation PSNR")
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=80)
    plt.close(fig)
    os.replace(tmp, path)


def safe_trial_name(name: str) -> str:
    cleaned = "".join(c if c.isalnum() or c in "-_." else "_" for c in name).strip("._")
    if not cleaned:
        raise ValueError(f"--trial_name {name!r} has no usable characters; use letters, digits, '-', '_'")
    return cleaned


def shared_out_dir(ranks: Ranks) -> Path:
    """``runs/models/{uuid4}``; rank 0 picks the uuid and shares it."""
    name = [uuid.uuid4().hex if ranks.main else None]
    if ranks.active:
        dist.broadcast_object_list(name, src=0)
    out = runs_dir() / "models" / str(uuid.UUID(name[0]))
    if ranks.main:
        out.mkdir(parents=True, exist_ok=True)
    return out


def attach_log_file(path: Path) -> None:
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger().addHandler(handler)
    if logging.getLogger().level > logging.INFO:
        logging.getLogger().setLevel(logging.INFO)


# ----------------------------------------------------------------------------- run state and resume


@dataclass
class RunState:
    """Where a run stands; saved in ``resume.pt`` at every validation."""

    best_psnr: float = -math.inf  # validation PSNR of the kept checkpoint
    best_scores: dict | None = None
    step: int = 0
    epoch: int = 0
    train_time: float = 0.0
    valid_time: float = 0.0
    elapsed: float = 0.0  # wall seconds of the earlier sessions of a resumed run (the budget counts them)
    sessions: int = 1
    history: list = field(default_factory=list)

    @classmethod
    def from_dict(cls, d: dict) -> RunState:
        known = {f.name for f in fields(cls)}
        if "best_eval" in d:  # the name before the trainer's refactor
            d = {**d, "best_scores": d["best_eval"]}
        return cls(**{k: v for k, v in d.items() if k in known})


def resume_settings(cfg: TrainConfig, given: set[str]) -> tuple[TrainConfig, dict]:
    """The config to continue ``cfg.resume`` with: the run's own settings, changed only by the
    ``RESUMABLE_OVERRIDES`` among ``given`` (the keys the user set); and the saved resume state."""
    path = Path(cfg.resume) / RESUME_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"cannot resume: {path} does not exist. Pass the runs/models/<uuid> folder of a run that validated at "
            "least once"
        )
    saved = torch.load(
        path, map_location="cpu", weights_only=False
    )  # our own file: optimiser and RNG states are not plain tensors
    now = cfg.settings()
    changed = sorted(
        k for k in given - {"resume"} if k not in RESUMABLE_OVERRIDES and now[k] != saved["settings"].get(k)
    )
    if changed:
        raise ValueError(
            f"cannot change {changed} when resuming (the run continues with its own settings); only "
            f"{list(RESUMABLE_OVERRIDES)} may change"
        )
    settings = {**saved["settings"], **{k: now[k] for k in given if k in RESUMABLE_OVERRIDES}, "resume": cfg.resume}
    return TrainConfig.from_settings(settings), saved


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
    state: RunState
    t_start: float

    @property
    def ckpt_path(self) -> Path:
        return self.out_dir / f"{MODEL_NAME}_{self.trial_name}.pth"

    def elapsed(self) -> float:
        """Wall seconds of the whole run, earlier sessions of a resumed run included."""
        return self.state.elapsed + time.perf_counter() - self.t_start

    def over_budget(self, total_steps: int) -> bool:
        budget_s = self.cfg.max_minutes * 60
        return self.state.step >= total_steps or (budget_s > 0 and self.elapsed() >= budget_s)


def save_resume(run: Run) -> None:
    """Atomically write everything ``resume`` needs: weights, optimiser, run state and RNG states."""
    state = {
        "trial_name": run.trial_name,
        "settings": {**run.cfg.settings(), "resume": ""},
        "arch": arch_of(run.model),
        "model_args": asdict(unwrap(run.model).cfg),
        "model": cpu_state_dict(run.model),
        "optimizer": run.optimizer.state_dict(),
        "run_state": {**asdict(run.state), "elapsed": run.elapsed()},
        "rng": {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()},
        **({"gan": run.gan.state_dict()} if run.gan is not None else {}),
    }
    tmp = run.out_dir / f".{RESUME_FILE}.tmp"
    torch.save(state, tmp)
    tmp.replace(run.out_dir / RESUME_FILE)


def restore(
    saved: dict, model: FRVSR, optimizer: torch.optim.Optimizer, gan: GanStage | None, ranks: Ranks
) -> RunState:
    """Put a resumed run back where it stopped: weights, optimiser, GAN stage, run state, RNG streams."""
    model.load_state_dict(saved["model"])
    optimizer.load_state_dict(saved["optimizer"])
    if gan is not None and "gan" in saved:
        gan.load_state_dict(saved["gan"])
    state = RunState.from_dict(saved["run_state"])
    state.sessions += 1
    if ranks.main:
        random.setstate(saved["rng"]["python"])
        np.random.set_state(saved["rng"]["numpy"])
    else:  # only rank 0's streams are saved: the others continue on fresh ones rather than replay theirs
        random.seed(1_000_003 * ranks.rank + state.step)
        np.random.seed(1_000_003 * ranks.rank + state.step)
    torch.set_rng_state(saved["rng"]["torch"])
    return state


def optimizer_to(optimizer: torch.optim.Optimizer, device: torch.device) -> None:
    """Move a loaded optimiser's moments to ``device`` (Adam's step counters stay where they are)."""
    for state in optimizer.state.values():
        for k, v in state.items():
            if isinstance(v, torch.Tensor) and k != "step":
                state[k] = v.to(device)


# ----------------------------------------------------------------------------- validation


def validate(run: Run) -> None:
    """Rank 0 scores the validation clips, keeps the checkpoint if it is the one to keep (the best PSNR;
    the GAN stage's own rule), and writes ``resume.pt``."""
    cfg, state = run.cfg, run.state
    if run.ranks.main:
        t0 = time.perf_counter()
        scores = validation_scores(run.model, run.val_samples, cfg, run.device, with_temporal=cfg.gan)
        state.valid_time += time.perf_counter() - t0
        tof = {"val_tof": scores["tOF"]} if cfg.gan else {}
        state.history.append(
            {"epoch": state.epoch, "step": state.step, "val_psnr": scores["PSNR"], "val_ssim": scores["SSIM"], **tof}
        )
        best = state.best_psnr if state.best_scores is not None else None
        keep = run.gan.keep(scores, best) if run.gan is not None else best is None or scores["PSNR"] > best
        if keep:
            state.best_psnr, state.best_scores = scores["PSNR"], scores
            save_checkpoint(
                run.ckpt_path, run.model, epoch=state.epoch, step=state.step, eval=scores, train_settings=cfg.settings()
            )
            if run.gan is not None:
                run.gan.save(run.ckpt_path, epoch=state.epoch, step=state.step)
        save_resume(run)
        tof_text = f" tOF {scores['tOF']:.4f}" if "tOF" in scores else ""
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
    if run.ranks.active:
        dist.barrier()


def score_reference(run: Run) -> None:
    """GAN stage: rank 0 scores the starting model once; the stage measures the PSNR drop from it."""
    if run.ranks.main:
        t0 = time.perf_counter()
        scores = validation_scores(run.model, run.val_samples, run.cfg, run.device, with_temporal=True)
        run.state.valid_time += time.perf_counter() - t0
        run.gan.set_reference(scores)
        run.state.history.append(
            {"epoch": 0, "step": 0, "val_psnr": scores["PSNR"], "val_ssim": scores["SSIM"], "val_tof": scores["tOF"]}
        )
    if run.ranks.active:
        dist.barrier()


# ----------------------------------------------------------------------------- the run


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
    clips = TrainClips(train_samples, cfg.num_frames, cfg.crop_size, cfg.degradation, cfg.crops_per_clip, cfg.seed)

    if saved is not None:
        cfg_cls, model_cls = ARCHS[saved.get("arch", DEFAULT_ARCH)]
        model = model_cls(cfg_cls.from_dict(saved["model_args"]))  # weights follow in restore
    elif cfg.init_from:
        model, _ = load_checkpoint(cfg.init_from, channels_last=False)
        log.info("initialised from %s (%s)", cfg.init_from, model.cfg)
    else:
        model = FRVSR(cfg.model)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    gan = GanStage.build(cfg, device) if cfg.gan else None
    state = restore(saved, model, optimizer, gan, ranks) if saved is not None else RunState()
    loader = build_loader(cfg, clips, ranks, state.step)
    model = model.to(device, memory_format=torch.channels_last).train()  # NHWC: faster convolutions (oneDNN, cuDNN)
    optimizer_to(optimizer, device)
    log.info("precision %s", resolve_precision(cfg.precision, device) if not cfg.gan else "fp32 (GAN stage)")

    out_dir = Path(cfg.resume).resolve() if cfg.resume else shared_out_dir(ranks)
    run = Run(cfg, trial_name, ranks, device, model, optimizer, gan, val_samples, out_dir, state, t_start)
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
            atomic_write_json(out_dir / "settings.json", settings)
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
    budget_s = cfg.max_minutes * 60
    total_steps = cfg.epochs * max(1, len(loader))
    stop = run.over_budget(total_steps)
    while not stop:
        if isinstance(loader.sampler, DistributedSampler):
            loader.sampler.set_epoch(state.epoch)
        losses = []
        t_epoch = time.perf_counter()
        for lr_batch, hr_batch in loader:
            progress = max(state.step / total_steps, (state.train_time / budget_s) if budget_s else 0.0)
            for group in run.optimizer.param_groups:
                group["lr"] = cosine_lr(cfg, progress)
            lr_batch, hr_batch = lr_batch.to(run.device), hr_batch.to(run.device)
            t0 = time.perf_counter()
            if run.gan is not None:
                stats = run.gan.step(net, run.optimizer, lr_batch, hr_batch)
            else:
                stats = train_step(net, run.optimizer, lr_batch, hr_batch, cfg)
            state.train_time += time.perf_counter() - t0
            state.step += 1
            losses.append(stats["loss"])
            lr_now = run.optimizer.param_groups[0]["lr"]
            if ranks.main and on_step:
                on_step({**stats, "step": state.step, "epoch": state.epoch, "lr": lr_now})
            if ranks.main and state.step % LOG_EVERY == 0:
                log.info(
                    "step %d epoch %d: loss %.5f psnr %.2f lr %.2e, %.2f s/step (training), %.1f min elapsed",
                    state.step,
                    state.epoch,
                    stats["loss"],
                    stats["psnr"],
                    lr_now,
                    state.train_time / state.step,
                    run.elapsed() / 60,
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
                {**cfg.settings(), "model_args": asdict(run.model.cfg)},
                state.best_scores or {},
                {"total": run.elapsed(), "train_time": state.train_time, "valid_time": state.valid_time},
            )
            atomic_write_json(trial_path(), trial)
            log.info("best validation PSNR %.4f dB; trial written to %s", state.best_psnr, trial_path())
        if ranks.active:
            dist.barrier()  # ranks tear gloo down together: one leaving while another still talks aborts it
        return trial
    finally:
        if ranks.active:
            dist.destroy_process_group()
