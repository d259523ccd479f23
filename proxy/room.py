"""The waiting room: first come, first served admission to the model server, bounded by a count and by bytes.

Pure asyncio bookkeeping, no HTTP: ``proxy.app`` admits a request, awaits its turn, and lets it leave. Each
served model has its own room (a slow model never holds up the default's queue).

Time left: a ticket's clip has ``frames`` of ``pixels`` each (from the container's header); the room learns
how long a clip takes from the requests it has timed (``wire.cost.ClipTimes``: a per-clip, a per-frame and a
per-pixel-frame cost; from a start-up hint until then) and plays the queue forward on its ``workers``: every
ticket ahead, in order, takes the worker that frees first for its remaining time (its estimate less the
time it has been processing).
"""

from __future__ import annotations

import asyncio
import collections
import heapq
import math
import statistics
import time
from dataclasses import dataclass, field

from wire.cost import Clip, ClipTimes


class QueueFull(Exception):
    """No room in the waiting room; ``retry_after`` is the estimated wait in whole seconds."""

    def __init__(self, msg: str, retry_after: int):
        super().__init__(msg)
        self.retry_after = retry_after


@dataclass(eq=False)
class Ticket:
    """One admitted request: waiting (uploading, then ready) or running (with the model server)."""

    nbytes: int
    request_id: str | None
    arrived: float = field(default_factory=time.perf_counter)
    ready: bool = False  # body read and valid: may be handed to the model server
    running: bool = False  # handed to the model server (processing, or next in its own small queue)
    go: asyncio.Future = field(default_factory=lambda: asyncio.get_running_loop().create_future())
    clip: Clip | None = None  # its frames and size, from the header; None: unknown (the clip mean is used)
    processing_since: float | None = None  # when a worker took it (the first ``workers`` running tickets)


class WaitingRoom:
    """First come, first served admission to the model server.

    ``slots`` tickets run at once; the others wait in arrival order. A ticket that cannot start at once
    takes a place in the waiting room, which holds at most ``max_waiting`` tickets and ``max_bytes`` of
    bodies (a request is never refused for bytes when nobody else waits). Seconds per clip are the mean
    of the last 20 timed requests; estimates use them.
    """

    def __init__(
        self,
        slots: int,
        max_waiting: int,
        max_bytes: int,
        workers: int = 1,
        clip_seconds_hint: float = 10.0,
        frame_cost_hint: tuple[float, float] | None = None,
    ):
        self.slots, self.max_waiting, self.max_bytes = max(1, slots), max(0, max_waiting), max_bytes
        self.workers = max(1, workers)
        self.clip_seconds_hint = clip_seconds_hint
        self.times = ClipTimes(frame_cost_hint)  # the model's start-up measurement, until clips are timed
        self.tickets: list[Ticket] = []  # active tickets in arrival order
        self.by_id: dict[str, Ticket] = {}
        self.recent: collections.deque[float] = collections.deque(maxlen=20)

    # -- state
    def running(self) -> int:
        return sum(t.running for t in self.tickets)

    def waiting(self) -> list[Ticket]:
        return [t for t in self.tickets if not t.running]

    def waiting_bytes(self) -> int:
        return sum(t.nbytes for t in self.tickets if not t.running)

    def seconds_per_clip(self) -> float:
        return statistics.fmean(self.recent) if self.recent else self.clip_seconds_hint

    def clip_estimate(self, ticket: Ticket) -> float:
        """Seconds the model server will take for this ticket's clip."""
        est = self.times.estimate(ticket.clip) if ticket.clip is not None else None
        return est if est is not None else self.seconds_per_clip()

    def time_left(self, ticket: Ticket, now: float | None = None) -> float | None:
        """Seconds until this ticket's answer is ready (queue ahead, then its own clip); None while uploading."""
        if not (ticket.ready or ticket.running) or ticket not in self.tickets:
            return None
        now = time.perf_counter() if now is None else now
        free = [0.0] * self.workers  # when each worker is next free, from now
        for t in self.tickets:
            if not (t.ready or t.running):
                continue  # still uploading: it will queue behind the ones ready now
            est = self.clip_estimate(t)
            if t.processing_since is not None:  # overdue: assume a tenth of its estimate is left
                est = max(est - (now - t.processing_since), 0.1 * est)
            end = heapq.heappop(free) + est
            heapq.heappush(free, end)
            if t is ticket:
                return end
        return None

    def estimated_wait(self, ahead: int) -> float:
        """Seconds until a ticket with ``ahead`` active tickets before it reaches a worker."""
        return math.ceil(ahead / self.workers) * self.seconds_per_clip() if ahead >= self.workers else 0.0

    def position(self, ticket: Ticket) -> int:
        """Active tickets that arrived before this one (0: it is with the model server or next)."""
        return (
            0 if ticket.running else sum(1 for t in self.tickets[: self.tickets.index(ticket)] if t.running or t.ready)
        )

    # -- transitions
    def admit(self, nbytes: int, request_id: str | None = None) -> Ticket:
        """A place for a new request, or QueueFull (the caller answers 503 with Retry-After)."""
        waiting = self.waiting()
        free = max(0, self.slots - self.running())
        queued_bytes = self.waiting_bytes()
        full = None
        if len(waiting) >= self.max_waiting + free:
            full = f"{len(waiting)} videos are waiting (the limit is {self.max_waiting})"
        elif waiting and queued_bytes + nbytes > self.max_bytes:
            full = (
                f"the waiting videos hold {queued_bytes / 2**20:.0f} MiB and this one {nbytes / 2**20:.1f} MiB "
                f"(the limit is {self.max_bytes / 2**20:.0f} MiB)"
            )
        if full:
            wait = self.estimated_wait(len(self.tickets))
            retry = max(1, math.ceil(wait))
            raise QueueFull(f"the queue is full: {full}; retry in {retry} s", retry)
        t = Ticket(nbytes, request_id)
        self.tickets.append(t)
        if request_id:
            self.by_id[request_id] = t
        return t

    async def turn(self, ticket: Ticket) -> None:
        """Mark the ticket ready and wait until it may go to the model server."""
        ticket.ready = True
        self._dispatch()
        await asyncio.shield(ticket.go)

    def record(self, seconds: float, clip: Clip | None = None) -> None:
        """A request's time on the model server (and its clip's size when known)."""
        self.recent.append(seconds)
        if clip is not None:
            self.times.add(seconds, clip)

    def leave(self, ticket: Ticket) -> None:
        """Done, failed, timed out or cancelled: free its place (and its slot) for the next one."""
        if ticket in self.tickets:
            self.tickets.remove(ticket)
        if ticket.request_id and self.by_id.get(ticket.request_id) is ticket:
            del self.by_id[ticket.request_id]
        if not ticket.go.done():
            ticket.go.cancel()
        self._dispatch()

    def _dispatch(self) -> None:
        running = self.running()
        for t in self.tickets:
            if running >= self.slots:
                break
            if t.ready and not t.running:
                t.running = True
                running += 1
                if not t.go.done():
                    t.go.set_result(None)
        now = time.perf_counter()
        for t in [t for t in self.tickets if t.running][: self.workers]:  # the model server works in arrival order
            if t.processing_since is None:
                t.processing_since = now

    def status(self) -> dict:
        """For GET /health."""
        return {
            "waiting": len(self.waiting()),
            "running": self.running(),
            "bytes_waiting": self.waiting_bytes(),
            "max_waiting": self.max_waiting,
            "max_bytes": self.max_bytes,
            "slots": self.slots,
            "seconds_per_clip": round(self.seconds_per_clip(), 3),
            "estimated_wait_s": round(self.estimated_wait(len(self.tickets)), 1),
        }
