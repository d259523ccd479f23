"""The CPU time a training run is counted in: its own process's and its DataLoader workers'."""

from __future__ import annotations

import psutil


def process_cpu_seconds() -> float:
    """User + system CPU seconds of this process, its finished children and its live ones (the DataLoader
    workers)."""
    me = psutil.Process()
    total = sum(me.cpu_times()[:4])  # user, system, children_user, children_system (children waited for)
    for child in me.children(recursive=True):
        try:
            total += sum(child.cpu_times()[:2])
        except psutil.Error:  # a worker that just exited
            continue
    return total
