"""Continuing a run (``resume``): where it stands (``ResumeState``), the file that holds it, and putting a
run back where it stopped.

Every validation writes ``resume.pt`` beside the kept checkpoint, through ``model.checkpoint.save_checkpoint``
(so it has a checkpoint's ``arch``/``model_args``/``model`` keys and ``model.checkpoint.model_from`` rebuilds
the network), with the optimiser, the run state, the RNG streams and the run's settings beside them.
"""

from __future__ import annotations

import math
import random
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch

from model.checkpoint import save_checkpoint
from train.config import TrainConfig
from train.distributed import Ranks

RESUME_FILE = "resume.pt"  # beside the kept checkpoint: everything needed to continue the run
# may change on resume
RESUMABLE_OVERRIDES = ("max_minutes", "max_cpu_minutes", "epochs", "threads", "workers", "val_every", "gan_keep")


@dataclass
class ResumeState:
    """Where a run stands; saved in ``resume.pt`` at every validation."""

    best_psnr: float = -math.inf  # validation PSNR of the kept checkpoint
    best_scores: dict | None = None
    step: int = 0
    epoch: int = 0
    train_time: float = 0.0
    valid_time: float = 0.0
    elapsed: float = 0.0  # wall seconds of the earlier sessions of a resumed run (the budget counts them)
    # CPU seconds (user + system) of the training processes (this one and its DataLoader workers) in the
    # earlier sessions, plus ``init_from``'s when a run starts from another run's weights and says so
    cpu_seconds: float = 0.0
    inherited_cpu_seconds: float = 0.0  # the part of ``cpu_seconds`` that came with ``init_from`` and distill's targets
    # the teacher-target caches (``runs/teacher_targets/<key>``) whose CPU time ``cpu_seconds`` holds: a distill run
    # started from one that used the same targets does not count them again
    counted_targets: list = field(default_factory=list)
    sessions: int = 1
    history: list = field(default_factory=list)

    @classmethod
    def from_dict(cls, d: dict) -> ResumeState:
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
    saved = torch.load(path, map_location="cpu", weights_only=False)  # our own file: optimiser and RNG states
    now = cfg.settings()
    # a run from init_from trains the file's network whatever architecture keys its settings gave: giving those
    # keys again on resume (the same annotation_data) changes nothing
    network = {f.name for f in fields(cfg.model)} | {"arch"} if saved["settings"].get("init_from") else set()
    changed = sorted(
        k
        for k in given - {"resume"} - network
        if k not in RESUMABLE_OVERRIDES and now[k] != saved["settings"].get(k)
    )
    if changed:
        raise ValueError(
            f"cannot change {changed} when resuming (the run continues with its own settings); only "
            f"{list(RESUMABLE_OVERRIDES)} may change"
        )
    settings = {**saved["settings"], **{k: now[k] for k in given if k in RESUMABLE_OVERRIDES}, "resume": cfg.resume}
    return TrainConfig.from_settings(settings), saved


def save_resume(
    out_dir: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    state: ResumeState,
    trial_name: str,
    cfg: TrainConfig,
    gan_state: dict | None = None,
) -> None:
    """Atomically write everything ``resume`` needs beside the run's checkpoint (``state`` as it stands now:
    its ``elapsed`` and ``cpu_seconds`` already include this session)."""
    save_checkpoint(
        out_dir / RESUME_FILE,
        model,
        trial_name=trial_name,
        settings={**cfg.settings(), "resume": ""},
        optimizer=optimizer.state_dict(),
        run_state=asdict(state),
        rng={"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()},
        **({"gan": gan_state} if gan_state is not None else {}),
    )


def restore(saved: dict, optimizer: torch.optim.Optimizer, gan, ranks: Ranks) -> ResumeState:
    """Put a resumed run back where it stopped: optimiser, GAN stage, run state, RNG streams (the weights
    come with the model, ``model.checkpoint.model_from(saved)``)."""
    optimizer.load_state_dict(saved["optimizer"])
    if gan is not None and "gan" in saved:
        gan.load_state_dict(saved["gan"])
    state = ResumeState.from_dict(saved["run_state"])
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
