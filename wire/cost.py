"""The cost model, standard library only: how long a clip takes and the time limits that follow, in one place
for the servers that measure a model at start-up and the proxy that learns from timed requests.

A clip of ``frames`` frames of ``pixels`` each takes ``a + b * frames + c * frames * pixels`` seconds (per clip,
per frame, per pixel-frame). At start-up a server times the model at two frame areas (``frame_cost``: ``b`` and
``c``, the ``FrameCost`` the proxy starts from) and gives TorchServe a limit for one clip (``clip_timeout``,
its ``responseTimeout``); the proxy's limit for one request is that time for every clip queued ahead of it
(``request_timeout``), and it fits ``a``, ``b`` and ``c`` to the clips it has timed (``ClipTimes``)::

    cost = frame_cost(spf, spf_quarter, limits.max_pixels)     # serving: two timings at start-up
    timeout = clip_timeout(spf, limits.max_frames)             # TorchServe's, per clip
    request_timeout(timeout, inflight, max_queued, workers)    # the proxy's, per request
    ClipTimes(cost).estimate(Clip(frames, pixels))             # the proxy's estimate, learning
"""

from __future__ import annotations

import collections
import math
from typing import NamedTuple

MIN_RESPONSE_TIMEOUT_S = 120  # TorchServe's limit for one clip is never under two minutes
CLIP_OVERHEAD_S = 60  # decode, encode and slack beside the model time, per clip
REQUEST_SLACK_S = 30  # the proxy's limit for one request beyond the clips it may wait for


class Clip(NamedTuple):
    """A clip's size (from its header)."""

    frames: int
    pixels: int  # per frame: width x height


class FrameCost(NamedTuple):
    """Model seconds per frame of a clip: ``per_frame + per_pixel_frame * pixels`` (measured at start-up)."""

    per_frame: float
    per_pixel_frame: float

    def at(self, pixels: int) -> float:
        """Seconds per frame of ``pixels``."""
        return self.per_frame + self.per_pixel_frame * pixels


def frame_cost(seconds_per_frame: float, seconds_per_quarter_frame: float, area: int) -> FrameCost:
    """The per-frame and per-pixel-frame cost from the model's time on a frame of ``area`` pixels and on one of
    a quarter of that area (both >= 0)."""
    per_pixel = max(0.0, (seconds_per_frame - seconds_per_quarter_frame) / (0.75 * area))
    return FrameCost(max(0.0, seconds_per_frame - per_pixel * area), per_pixel)


def clip_timeout(seconds_per_frame: float, max_frames: int) -> int:
    """Seconds TorchServe may give one clip: twice the model time of the largest accepted clip (``max_frames``
    at ``seconds_per_frame``, timed with the threads one worker gets), + 60 s for decode, encode and slack;
    never under two minutes."""
    worst = seconds_per_frame * max_frames
    return int(max(MIN_RESPONSE_TIMEOUT_S, math.ceil(2 * worst + CLIP_OVERHEAD_S)))


def request_timeout(response_timeout_s: float, inflight: int, max_queued: int, workers: int) -> float:
    """The proxy's limit for one request from its arrival: every request ahead of it in the proxy's
    (``max_queued``) and the model server's (``inflight``) queues, and its own clip, at the worst-case
    ``response_timeout_s`` each on ``workers`` in parallel, + 30 s."""
    return float(response_timeout_s * math.ceil((inflight + max_queued) / max(1, workers)) + REQUEST_SLACK_S)


class ClipTimes:
    """Seconds a clip takes, learned from timed clips: ``a + b * frames + c * frames * pixels``, fitted by
    least squares over the last 20 with every cost >= 0 (the per-clip and then the per-frame term are dropped
    while the clips seen cannot pin them down). Before any clip: ``b`` and ``c`` from the start-up measurement."""

    def __init__(self, frame_cost_hint: tuple[float, float] | None = None, keep: int = 20):
        self.hint = frame_cost_hint
        self.samples: collections.deque[tuple[float, Clip]] = collections.deque(maxlen=keep)
        self._fit: tuple[float, float, float] | None = None

    def add(self, seconds: float, clip: Clip) -> None:
        self.samples.append((seconds, clip))
        self._fit = None

    def coefficients(self) -> tuple[float, float, float] | None:
        """(a per clip, b per frame, c per pixel-frame) in seconds, or None with neither samples nor a hint."""
        if self._fit is None:
            self._fit = self._solve()
        return self._fit

    def estimate(self, clip: Clip) -> float | None:
        k = self.coefficients()
        return None if k is None else k[0] + k[1] * clip.frames + k[2] * clip.frames * clip.pixels

    def per_frame(self, pixels: int) -> float | None:
        """Seconds per frame of ``pixels`` (without the per-clip cost)."""
        k = self.coefficients()
        return None if k is None else k[1] + k[2] * pixels

    def _solve(self) -> tuple[float, float, float] | None:
        if not self.samples:
            return None if self.hint is None else (0.0, *self.hint)
        rows = [(1.0, float(c.frames), float(c.frames * c.pixels)) for _, c in self.samples]
        ys = [t for t, _ in self.samples]
        distinct = len(set(rows))
        for terms in ((0, 1, 2), (1, 2)):
            if distinct < len(terms):
                continue
            coef = _least_squares([[r[i] for i in terms] for r in rows], ys)
            if coef is not None and all(x >= 0 for x in coef):
                full = [0.0, 0.0, 0.0]
                for i, x in zip(terms, coef, strict=True):
                    full[i] = x
                return full[0], full[1], full[2]
        b, c = self.hint if self.hint is not None else (0.0, 1.0)  # the start-up shape, or per pixel-frame only
        k = sum(ys) / sum(b * r[1] + c * r[2] for r in rows)
        return 0.0, k * b, k * c


def _least_squares(x: list[list[float]], y: list[float]) -> list[float] | None:
    """Ordinary least squares of a few columns (normal equations on columns scaled to unit mean; Gaussian
    elimination with partial pivoting); None when the columns are (nearly) dependent."""
    k = len(x[0])
    scale = [max(1e-12, sum(abs(r[j]) for r in x) / len(x)) for j in range(k)]
    xs = [[r[j] / scale[j] for j in range(k)] for r in x]
    a = [[sum(r[i] * r[j] for r in xs) for j in range(k)] + [sum(r[i] * t for r, t in zip(xs, y, strict=True))]
         for i in range(k)]  # fmt: skip
    for col in range(k):
        piv = max(range(col, k), key=lambda i: abs(a[i][col]))
        if abs(a[piv][col]) < 1e-9 * len(x):
            return None
        a[col], a[piv] = a[piv], a[col]
        for i in range(k):
            if i != col:
                f = a[i][col] / a[col][col]
                a[i] = [u - f * v for u, v in zip(a[i], a[col], strict=True)]
    return [a[i][k] / a[i][i] / scale[i] for i in range(k)]
