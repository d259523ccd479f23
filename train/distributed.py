"""One process or a ``torchrun`` group (DistributedDataParallel: gloo on CPU, NCCL on GPU): ranks, devices,
agreeing on a stop, and the output folder every rank shares."""

from __future__ import annotations

import datetime
import os
import uuid
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist

from common.paths import runs_dir
from model.runtime import resolve_device


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


CACHE_TIMEOUT = datetime.timedelta(hours=4)


def setup_distributed(device_name: str) -> Ranks:
    """Join the torchrun group if launched by torchrun (WORLD_SIZE > 1), else a single process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Ranks()
    ranks = Ranks(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))
    backend = "nccl" if device_name.startswith("cuda") else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(ranks.local_rank)
    # the other ranks wait in a barrier while rank 0 computes a cache (flows, a distill run's teacher targets: about
    # an hour on one core), longer than the default 30 minutes a collective may wait
    dist.init_process_group(backend, timeout=CACHE_TIMEOUT)
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


def barrier(ranks: Ranks) -> None:
    """Wait for every rank (a no-op for a single process)."""
    if ranks.active:
        dist.barrier()


def shared_out_dir(ranks: Ranks) -> Path:
    """``runs/models/{uuid4}``; rank 0 picks the uuid and shares it."""
    name = [uuid.uuid4().hex if ranks.main else None]
    if ranks.active:
        dist.broadcast_object_list(name, src=0)
    out = runs_dir() / "models" / str(uuid.UUID(name[0]))
    if ranks.main:
        out.mkdir(parents=True, exist_ok=True)
    return out
