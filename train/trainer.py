"""FRVSR training: data loading, one optimisation step, validation, checkpoints, the run itself.

With ``gan`` on, the same run is FRVSR_GAN's adversarial stage (``gan_step``, parts in train/gan.py):
the generator's ``.pth`` stays a plain FRVSR checkpoint; the discriminator is saved beside it.

Runs as one process or under ``torchrun`` (DistributedDataParallel: gloo on CPU, NCCL on GPU). Only
rank 0 validates and writes files. Stopping (time budget, epochs, or a stop request such as Ctrl-C)
is agreed by all ranks at every step, so no process is left waiting in a collective.
"""

from __future__ import annotations

import logging
import math
import os
import random
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler

from model.checkpoint import load_checkpoint, save_checkpoint
from model.frvsr import FRVSR, FRVSRConfig, flow_warp
from model.inference import autocast, resolve_precision
from train.config import TrainConfig
from train.data import TrainClips, discover_samples, split_samples
from train.evaluate import evaluate_clips
from train.gan import (
    Discriminator, average_gradients, d_hinge_loss, discriminator_input, discriminator_path, feature_matching_loss,
    g_hinge_loss, load_discriminator, neighbour_flows, pingpong, pingpong_loss, save_discriminator, set_requires_grad,
    sync_discriminator,
)
from train.metrics import Aggregate, Exact, psnr_from_mse
from train.results import MODEL_NAME, atomic_write_json, runs_dir, trial_path

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- processes

@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1


def setup_distributed(device: str) -> Dist:
    """Join the torchrun group if launched by torchrun (WORLD_SIZE > 1), else a single process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    d = Dist(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))
    backend = "nccl" if device.startswith("cuda") else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(d.local_rank)
    dist.init_process_group(backend)
    return d


def resolve_device(device: str, d: Dist) -> torch.device:
    """'cpu', 'cuda' or 'cuda:N'; a missing GPU is a clear error."""
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"--device {device} was requested but CUDA is not available on this machine; use --device cpu")
        return torch.device("cuda", d.local_rank if d.active else (torch.device(device).index or 0))
    if device != "cpu":
        raise ValueError(f"--device must be 'cpu' or 'cuda[:N]', got {device!r}")
    return torch.device("cpu")


# ----------------------------------------------------------------------------- steps

def build_loader(cfg: TrainConfig, dataset: TrainClips, d: Dist) -> DataLoader:
    sampler = DistributedSampler(dataset, d.world, d.rank, shuffle=True, seed=cfg.seed) if d.active else None
    return DataLoader(
        dataset, batch_size=cfg.batch_size, shuffle=sampler is None, sampler=sampler, drop_last=len(dataset) >= cfg.batch_size * d.world,
        num_workers=cfg.workers, persistent_workers=cfg.workers > 0,
    )


def warp_loss(lr: torch.Tensor, flows: torch.Tensor) -> torch.Tensor:
    """FNet's warping L2: each low-res frame warped by its flow should match the next. lr (b, t, 3, h, w), flows (b, t, 2, h, w)."""
    prev = lr[:, :-1].reshape(-1, *lr.shape[2:])  # (b*(t-1), 3, h, w)
    warped = flow_warp(prev, flows[:, 1:].reshape(-1, 2, *lr.shape[3:]))
    return F.mse_loss(warped, lr[:, 1:].reshape(-1, *lr.shape[2:]))


def frvsr_loss(model: torch.nn.Module, lr: torch.Tensor, hr: torch.Tensor, cfg: TrainConfig) -> tuple[torch.Tensor, dict]:
    """Pixel L2 on the output + FNet's warping L2 on low-res frames. lr (b, t, 3, h, w), hr (b, t, 3, 4h, 4w)."""
    out, flows = model(lr)  # (b, t, 3, 4h, 4w), (b, t, 2, h, w)
    pixel = F.mse_loss(out, hr)
    flow = warp_loss(lr, flows)
    return pixel + cfg.flow_loss_weight * flow, {"pixel": pixel.item(), "flow": flow.item(), "psnr": psnr_from_mse(pixel.item())}


def train_step(model, optimizer, lr, hr, cfg: TrainConfig) -> dict:
    optimizer.zero_grad(set_to_none=True)
    with autocast(resolve_precision(cfg.precision, lr.device), lr.device):  # forward only; backward follows its dtypes
        loss, stats = frvsr_loss(model, lr, hr, cfg)
    loss.backward()
    if cfg.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
    optimizer.step()
    stats["loss"] = loss.item()
    return stats


def gan_step(net, disc: Discriminator, opt_g, opt_d, lr: torch.Tensor, hr: torch.Tensor, cfg: TrainConfig) -> dict:
    """One adversarial step on a ping-pong window: the discriminator first, then the generator.

    lr (b, n, 3, h, w), hr (b, n, 3, 4h, 4w). Generator loss = pixel L2 + flow_loss_weight * warp
    + w_pingpong * ping-pong + w_adv * hinge + w_fm * feature matching, all on x_1..x_n..x_1.
    """
    n = lr.shape[1]
    lr_pp, hr_pp = pingpong(lr), pingpong(hr)  # (b, 2n-1, ...)
    out, flows = net(lr_pp)  # (b, 2n-1, 3, H, W), (b, 2n-1, 2, h, w)
    nflows = neighbour_flows(getattr(net, "module", net).fnet, lr_pp)  # (b, 2n-3, 2, 2, h, w), no gradient
    real = discriminator_input(hr_pp, lr_pp, nflows)  # (b*(2n-3), 12, H, W)
    fake = discriminator_input(out, lr_pp, nflows)

    # discriminator: real and generated windows in one batch (generated ones detached)
    set_requires_grad(disc, True)
    opt_d.zero_grad(set_to_none=True)
    logits, _ = disc(torch.cat((real, fake.detach())))
    d_real, d_fake = logits.chunk(2)
    loss_d = d_hinge_loss(d_real, d_fake)
    loss_d.backward()
    average_gradients(disc)
    opt_d.step()

    # generator, through the frozen (just updated) discriminator
    set_requires_grad(disc, False)
    logits, feats = disc(torch.cat((real, fake)))
    fake_logits = logits.chunk(2)[1]
    fm = feature_matching_loss([f.chunk(2)[1] for f in feats], [f.chunk(2)[0] for f in feats])
    adv = g_hinge_loss(fake_logits)
    pixel = F.mse_loss(out, hr_pp)
    warp = warp_loss(lr_pp, flows)
    pp = pingpong_loss(out, n)
    loss = pixel + cfg.flow_loss_weight * warp + cfg.w_pingpong * pp + cfg.w_adv * adv + cfg.w_fm * fm
    opt_g.zero_grad(set_to_none=True)
    loss.backward()
    if cfg.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(net.parameters(), cfg.grad_clip)
    opt_g.step()
    set_requires_grad(disc, True)
    return {
        "loss": loss.item(), "pixel": pixel.item(), "flow": warp.item(), "psnr": psnr_from_mse(pixel.item()), "pingpong": pp.item(),
        "adv": adv.item(), "fm": fm.item(), "d_loss": loss_d.item(), "d_real": d_real.mean().item(), "d_fake": d_fake.mean().item(),
    }


def evaluate(model: FRVSR, samples, cfg: TrainConfig, device, with_temporal: bool = False) -> dict[str, float]:
    """Validation on whole clips through the shared inference path; the platform's {MSE, SSIMs, PSNR, SSIM}
    (plus ``tOF`` with ``with_temporal``)."""
    agg = Aggregate()
    for r in evaluate_clips(model, samples, cfg.degradation, device, with_temporal=with_temporal, precision=cfg.precision):
        agg.add(r.model)
    return {**agg.result(), "tOF": agg.tof()} if with_temporal else agg.result()


def cosine_lr(cfg: TrainConfig, progress: float) -> float:
    progress = min(max(progress, 0.0), 1.0)
    return cfg.lr_min + (cfg.lr - cfg.lr_min) * 0.5 * (1 + math.cos(math.pi * progress))


# ----------------------------------------------------------------------------- outputs

def plot_curves(history: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
    steps = [h["step"] for h in history if "loss" in h]
    a1.plot(steps, [h["loss"] for h in history if "loss" in h])
    a1.set(xlabel="step", ylabel="training loss (epoch mean)", yscale="log", title="loss")
    val = [h for h in history if "val_psnr" in h]
    a2.plot([h["step"] for h in val], [h["val_psnr"] for h in val], marker="o")
    a2.set(xlabel="step", ylabel="PSNR (dB)", title="validation PSNR (step 0: the GAN stage's starting model)" if val and val[0]["step"] == 0 else "validation PSNR")
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


# ----------------------------------------------------------------------------- the run

LOG_EVERY = 50  # steps between progress lines in train.log
RESUME_FILE = "resume.pt"  # beside the kept checkpoint: everything needed to continue the run
RESUMABLE_OVERRIDES = ("max_minutes", "epochs", "threads", "workers", "val_every")  # may change on resume


@dataclass
class RunState:
    best_psnr: float = -math.inf  # validation PSNR of the kept checkpoint
    best_eval: dict | None = None
    ref_psnr: float = -math.inf  # GAN stage: validation PSNR of the starting model (init_from)
    kept_within: bool = False  # GAN stage: the kept checkpoint is within gan_psnr_drop of ref_psnr
    step: int = 0
    epoch: int = 0
    train_time: float = 0.0
    valid_time: float = 0.0
    elapsed: float = 0.0  # wall seconds of the earlier sessions of a resumed run (the budget counts them)
    sessions: int = 1
    history: list = field(default_factory=list)


def load_splits(dataset_path: str, cfg: TrainConfig) -> tuple[list, list]:
    """Train and validation samples of ``dataset_path`` and every ``extra_datasets`` folder, each split
    by its own ``sep_trainlist.txt``/``sep_testlist.txt`` (or ``val_split``)."""
    train_s, val_s = [], []
    for root in [dataset_path, *cfg.extra_datasets]:
        t, v = split_samples(root, discover_samples(root, cfg.min_frames), cfg.val_split, cfg.seed)
        log.info("%s: %d train, %d validation samples", root, len(t), len(v))
        train_s += t
        val_s += v
    return train_s, val_s


def resume_settings(cfg: TrainConfig, given: set[str]) -> tuple[TrainConfig, dict]:
    """The config to continue ``cfg.resume`` with: the run's own settings, changed only by the
    ``RESUMABLE_OVERRIDES`` among ``given`` (the keys the user set); and the saved resume state."""
    folder = Path(cfg.resume)
    path = folder / RESUME_FILE
    if not path.is_file():
        raise FileNotFoundError(f"cannot resume: {path} does not exist. Pass the runs/models/<uuid> folder of a run that validated at least once")
    saved = torch.load(path, map_location="cpu", weights_only=False)
    changed = sorted(k for k in given - {"resume"} if k not in RESUMABLE_OVERRIDES and cfg.settings()[k] != saved["settings"].get(k))
    if changed:
        raise ValueError(f"cannot change {changed} when resuming (the run continues with its own settings); only {list(RESUMABLE_OVERRIDES)} may change")
    settings = {**saved["settings"], **{k: cfg.settings()[k] for k in given if k in RESUMABLE_OVERRIDES}, "resume": cfg.resume}
    return TrainConfig.from_settings(settings), saved


def save_resume(folder: Path, trial_name: str, cfg: TrainConfig, model, optimizer, st: RunState, now_elapsed: float, disc=None, opt_d=None) -> None:
    """Atomically write everything ``resume`` needs: weights, optimiser, run state and RNG states."""
    state = {
        "trial_name": trial_name, "settings": {**cfg.settings(), "resume": ""},
        "model_args": asdict(getattr(model, "module", model).cfg), "model": _cpu_state(model), "optimizer": optimizer.state_dict(),
        "run_state": {**asdict(st), "elapsed": now_elapsed},
        "rng": {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()},
        **({"disc": _cpu_state(disc), "opt_d": opt_d.state_dict()} if disc is not None else {}),
    }
    tmp = folder / f".{RESUME_FILE}.tmp"
    torch.save(state, tmp)
    tmp.replace(folder / RESUME_FILE)


def _cpu_state(module: torch.nn.Module) -> dict:
    return {k: v.detach().cpu() for k, v in getattr(module, "module", module).state_dict().items()}


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
    d = setup_distributed(device)
    try:
        dev = resolve_device(device, d)
        torch.set_num_threads(cfg.threads or max(1, (os.cpu_count() or 1) // d.world))
        random.seed(cfg.seed + d.rank)
        np.random.seed(cfg.seed + d.rank)
        torch.manual_seed(cfg.seed)  # same initial weights on every rank

        train_s, val_s = load_splits(dataset_path, cfg)
        loader = build_loader(cfg, TrainClips(train_s, cfg.num_frames, cfg.crop_size, cfg.degradation, cfg.crops_per_clip, cfg.seed), d)

        if saved is not None:
            model = FRVSR(FRVSRConfig.from_dict(saved["model_args"]))  # weights follow in _restore
        elif cfg.init_from:
            model, _ = load_checkpoint(cfg.init_from, channels_last=False)
            log.info("initialised from %s (%s)", cfg.init_from, model.cfg)
        else:
            model = FRVSR(cfg.model_config())
        optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
        disc = opt_d = None
        if cfg.gan:
            disc, opt_d = build_discriminator(cfg, dev)
        st = RunState()
        if saved is not None:
            st = _restore(saved, model, optimizer, disc, opt_d, d)
        model = model.to(dev, memory_format=torch.channels_last).train()  # NHWC: faster convolutions (oneDNN, cuDNN)
        _optimizer_to(optimizer, dev)
        log.info("precision %s", resolve_precision(cfg.precision, dev) if not cfg.gan else "fp32 (GAN stage)")
        net = DistributedDataParallel(model) if d.active else model

        out_dir = Path(cfg.resume).resolve() if cfg.resume else _shared_out_dir(d)
        ckpt_path = out_dir / f"{MODEL_NAME}_{trial_name}.pth"
        if d.main:
            _attach_log_file(out_dir / "train.log")
            if saved is None:
                atomic_write_json(out_dir / "settings.json", {"trial_name": trial_name, "device": device, "world_size": d.world, **cfg.settings(), "model_args": asdict(model.cfg)})
            log.info("%s %s; settings %s", "resuming at step %d in" % st.step if saved else "writing to", out_dir, cfg.settings())

        if cfg.gan and cfg.init_from and saved is None:
            _reference(model, val_s, cfg, dev, d, st)
        budget_s = cfg.max_minutes * 60
        total_steps = cfg.epochs * max(1, len(loader))

        def elapsed() -> float:
            return st.elapsed + time.perf_counter() - t_start

        def checkpoint() -> None:
            _validate(model, val_s, cfg, dev, d, st, ckpt_path, disc)
            if d.main:
                save_resume(out_dir, trial_name, cfg, model, optimizer, st, elapsed(), disc, opt_d)

        stop = st.step >= total_steps or (budget_s > 0 and elapsed() >= budget_s)
        while not stop:
            if isinstance(loader.sampler, DistributedSampler):
                loader.sampler.set_epoch(st.epoch)
            epoch_losses = []
            t_epoch = time.perf_counter()
            for lr_b, hr_b in loader:
                progress = max(st.step / total_steps, (st.train_time / budget_s) if budget_s else 0.0)
                for g in optimizer.param_groups:
                    g["lr"] = cosine_lr(cfg, progress)
                t0 = time.perf_counter()
                if disc is not None:
                    stats = gan_step(net, disc, optimizer, opt_d, lr_b.to(dev), hr_b.to(dev), cfg)
                else:
                    stats = train_step(net, optimizer, lr_b.to(dev), hr_b.to(dev), cfg)
                st.train_time += time.perf_counter() - t0
                st.step += 1
                epoch_losses.append(stats["loss"])
                if d.main and on_step:
                    on_step({**stats, "step": st.step, "epoch": st.epoch, "lr": optimizer.param_groups[0]["lr"]})
                if d.main and st.step % LOG_EVERY == 0:  # a line in train.log for runs without a terminal
                    log.info("step %d epoch %d: loss %.5f psnr %.2f lr %.2e, %.2f s/step (training), %.1f min elapsed", st.step, st.epoch, stats["loss"], stats["psnr"],
                             optimizer.param_groups[0]["lr"], st.train_time / st.step, elapsed() / 60)
                over = st.step >= total_steps or (budget_s > 0 and elapsed() >= budget_s)
                stop = _agree(d, over or stop_requested())
                if stop:
                    break
            st.epoch += 1
            if epoch_losses:
                st.history.append({"epoch": st.epoch, "step": st.step, "loss": float(np.mean(epoch_losses)), "epoch_seconds": time.perf_counter() - t_epoch})
            if stop or st.epoch % cfg.val_every == 0:
                checkpoint()
                stop = _agree(d, stop or stop_requested())

        trial = None
        if d.main:
            plot_curves(st.history, out_dir / "training_curves.png")
            atomic_write_json(out_dir / "history.json", st.history)
            trial = build_trial(trial_name, out_dir, cfg, model, st, elapsed())
            atomic_write_json(trial_path(), trial)
            log.info("best validation PSNR %.4f dB; trial written to %s", st.best_psnr, trial_path())
        if d.active:
            dist.barrier()  # ranks tear gloo down together: one leaving while another still talks aborts it
        return trial
    finally:
        if d.active:
            dist.destroy_process_group()


def _restore(saved: dict, model, optimizer, disc, opt_d, d: Dist) -> RunState:
    """Put a resumed run back where it stopped: weights, optimiser, run state, RNG streams."""
    model.load_state_dict(saved["model"])
    optimizer.load_state_dict(saved["optimizer"])
    if disc is not None and "disc" in saved:
        disc.load_state_dict(saved["disc"])
        opt_d.load_state_dict(saved["opt_d"])
    st = RunState(**saved["run_state"])
    st.sessions += 1
    if d.rank == 0:  # other ranks keep their own seeded streams
        random.setstate(saved["rng"]["python"])
        np.random.set_state(saved["rng"]["numpy"])
    torch.set_rng_state(saved["rng"]["torch"])
    return st


def _optimizer_to(optimizer: torch.optim.Optimizer, dev: torch.device) -> None:
    for state in optimizer.state.values():
        for k, v in state.items():
            if isinstance(v, torch.Tensor) and k != "step":
                state[k] = v.to(dev)


def build_discriminator(cfg: TrainConfig, dev) -> tuple[Discriminator, torch.optim.Optimizer]:
    """The GAN stage's discriminator, resumed from ``discriminator_*.pth`` beside ``init_from`` if there is one."""
    resume = discriminator_path(cfg.init_from) if cfg.init_from else None
    if resume is not None and resume.is_file():
        disc = load_discriminator(resume)
        log.info("discriminator resumed from %s", resume)
    else:
        disc = Discriminator(cfg.d_channels)
    disc = disc.to(dev).train()
    sync_discriminator(disc)
    # beta1 0.5: the usual GAN setting, momentum lags behind a moving target less
    return disc, torch.optim.Adam(disc.parameters(), lr=cfg.gan_lr_d, betas=(0.5, 0.999))


def keep_checkpoint(ev: dict, cfg: TrainConfig, st: RunState) -> bool:
    """Whether this validation's weights replace the kept checkpoint.

    FRVSR: the best validation PSNR. GAN stage: PSNR falls as the generator trades fidelity for detail,
    so the best PSNR would just be the starting model; instead the latest checkpoint whose PSNR is within
    ``gan_psnr_drop`` dB of the starting model's (a guard against a diverging GAN) is kept, and until one
    qualifies, the best PSNR.
    """
    if st.best_eval is None:
        return True
    if not cfg.gan:
        return ev["PSNR"] > st.best_psnr
    if ev["PSNR"] >= st.ref_psnr - cfg.gan_psnr_drop:
        return True
    return not st.kept_within and ev["PSNR"] > st.best_psnr


def _reference(model: FRVSR, val_s, cfg: TrainConfig, dev, d: Dist, st: RunState) -> None:
    """GAN stage: rank 0 scores the starting model once; ``keep_checkpoint`` measures the PSNR drop from it."""
    if d.main:
        t0 = time.perf_counter()
        ev = evaluate(model, val_s, cfg, dev, with_temporal=True)
        st.valid_time += time.perf_counter() - t0
        st.ref_psnr = ev["PSNR"]
        st.history.append({"epoch": 0, "step": 0, "val_psnr": ev["PSNR"], "val_ssim": ev["SSIM"], "val_tof": ev["tOF"]})
        log.info("GAN stage starts from val PSNR %.4f dB SSIM %.4f tOF %.4f; keeping checkpoints above %.4f dB", ev["PSNR"], ev["SSIM"], ev["tOF"], st.ref_psnr - cfg.gan_psnr_drop)
    if d.active:
        dist.barrier()


def _validate(model: FRVSR, val_s, cfg: TrainConfig, dev, d: Dist, st: RunState, ckpt_path: Path, disc: Discriminator | None = None) -> None:
    """Rank 0 scores the validation clips and saves the checkpoint if ``keep_checkpoint`` says so
    (with the discriminator beside it in the GAN stage)."""
    if d.main:
        t0 = time.perf_counter()
        ev = evaluate(model, val_s, cfg, dev, with_temporal=cfg.gan)
        st.valid_time += time.perf_counter() - t0
        st.history.append({"epoch": st.epoch, "step": st.step, "val_psnr": ev["PSNR"], "val_ssim": ev["SSIM"], **({"val_tof": ev["tOF"]} if cfg.gan else {})})
        if keep_checkpoint(ev, cfg, st):
            st.best_psnr, st.best_eval = ev["PSNR"], ev
            st.kept_within = st.kept_within or (cfg.gan and ev["PSNR"] >= st.ref_psnr - cfg.gan_psnr_drop)
            save_checkpoint(ckpt_path, model, epoch=st.epoch, step=st.step, eval=ev, train_settings=cfg.settings())
            if disc is not None:
                save_discriminator(discriminator_path(ckpt_path), disc, epoch=st.epoch, step=st.step)
        tof = f" tOF {ev['tOF']:.4f}" if "tOF" in ev else ""
        log.info("epoch %d step %d: val PSNR %.4f dB SSIM %.4f%s (%s %.4f)", st.epoch, st.step, ev["PSNR"], ev["SSIM"], tof, "kept" if cfg.gan else "best", st.best_psnr)
    if d.active:
        dist.barrier()


def _agree(d: Dist, flag: bool) -> bool:
    """True on every rank if any rank wants to stop."""
    if not d.active:
        return flag
    t = torch.tensor([1.0 if flag else 0.0])
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def _shared_out_dir(d: Dist) -> Path:
    """``runs/models/{uuid4}``; rank 0 picks the uuid and shares it."""
    name = [uuid.uuid4().hex if d.main else None]
    if d.active:
        dist.broadcast_object_list(name, src=0)
    out = runs_dir() / "models" / str(uuid.UUID(name[0]))
    if d.main:
        out.mkdir(parents=True, exist_ok=True)
    return out


def _attach_log_file(path: Path) -> None:
    h = logging.FileHandler(path)
    h.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger().addHandler(h)
    if logging.getLogger().level > logging.INFO:
        logging.getLogger().setLevel(logging.INFO)


def build_trial(trial_name: str, out_dir: Path, cfg: TrainConfig, model: FRVSR, st: RunState, total: float) -> dict:
    """The platform's trial.txt for a training run (field names are a contract)."""
    ev = st.best_eval or {}
    return {
        "recom_model": MODEL_NAME,
        "gened_model_name": f"{MODEL_NAME}_{trial_name}",
        "metric_type": "PSNR",
        "metric_value": ev.get("PSNR"),
        "used_models": MODEL_NAME,
        "model_path": str(out_dir.resolve()),
        "model_params": Exact({**cfg.settings(), "model_args": asdict(model.cfg)}),
        "eval_result": {MODEL_NAME: {"eval": {k: ev.get(k) for k in ("MSE", "SSIMs", "PSNR", "SSIM")}}},
        "predict_prob": {},
        "train_consuming": {"total": total, "train_time": st.train_time, "valid_time": st.valid_time},
    }
