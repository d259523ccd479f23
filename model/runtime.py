"""Where and how a model runs: the device, the threads of a worker.

``resolve_device`` turns a ``--device`` value into a ``torch.device`` with a message that says what to use
instead; ``threads_per_worker`` splits the cores between model-server workers.
"""

from __future__ import annotations

import os

import torch


def available_cores() -> int:
    """CPU cores this process may use (its affinity mask where the OS has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def threads_per_worker(torch_threads: int, workers: int) -> int:
    """Intra-op torch threads of one worker: ``torch_threads`` when set (> 0), else the cores / workers."""
    if torch_threads > 0:
        return torch_threads
    return max(1, available_cores() // max(1, workers))


def resolve_device(device: str) -> torch.device:
    """``cpu``, ``cuda`` or ``cuda:N`` -> ``torch.device``; ValueError saying what to use instead."""
    if device != "cpu" and not device.startswith("cuda"):
        raise ValueError(f"--device must be cpu, cuda or cuda:N, got {device!r}")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(
            f"--device {device} requested, but PyTorch sees no CUDA GPU (torch.cuda.is_available() is False); "
            "use --device cpu"
        )
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ValueError(f"--device must be cpu, cuda or cuda:N, got {device!r}") from None
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ValueError(
            f"--device {device}: there are only {torch.cuda.device_count()} CUDA GPU(s) "
            f"(cuda:0..cuda:{torch.cuda.device_count() - 1})"
        )
    return dev
