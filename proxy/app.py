"""The public front door on one port: ``POST /autotable/predict``, ``GET /health``, the queue and the web page.

    success: 200 {"code": 200, "data": {"content": "<base64 4x video>", "elapsed_time": 1.2345}, "msg": "ok"}
    error:   <status> {"code": <status>, "data": null, "msg": "<what is wrong and what to do>"}

The proxy validates a body itself (a bad request never waits for a worker), then queues it: at most
``max_inflight`` requests are with the model server at once and the rest wait here in arrival order, in a
waiting room bounded by a count and by the bytes of the bodies it holds. Only past that bound does a
request get 503 with ``Retry-After`` (the estimated wait). The wait counts toward the request's timeout.
The model server is reached through ``proxy.backend`` (TorchServe, or a KServe predictor). ``GET /`` serves the page in
``proxy/static/`` (plain HTML/JS/CSS, nothing from the internet), which uses the same predict route.
Everything is asyncio (aiohttp): a long super-resolution never blocks other requests; JSON and base64
checks of large bodies run in threads. It logs sizes, statuses and timings, never content.

    python -m proxy.app --model FRVSR_GAN_default --key_file runs/serve/<run>/key_file.json
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import logging
import math
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

from handler.errors import BadRequest
from handler.payload import parse_body
from proxy.backend import Backend, TorchServeBackend
from serving.contract import (
    HEALTH_PATH,
    PAGE_PATH,
    PREDICT_PATH,
    QUEUE_PATH,
    REQUEST_ID_HEADER,
    STATIC_PATH,
    TIMING_HEADER,
    error_body,
    parse_timing,
    success_body,
)

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).resolve().parent / "static"
T0 = web.RequestKey("t0", float)  # when the request arrived (perf_counter)
TIMING = web.RequestKey("timing", str)  # the worker's stage timings, for the log line


@dataclass(frozen=True)
class ProxyConfig:
    max_body_bytes: int = 52428800  # = TorchServe's max_request_size
    timeout_s: float = 1200.0  # for one request from its arrival, queue wait included; then 504
    max_inflight: int = 2  # requests with the model server at once (processing or in its own small queue)
    max_queued: int = 32  # requests waiting here beyond those (uploading, validated, waiting their turn)
    max_queued_bytes: int = 512 * 2**20  # bytes of the bodies those waiting requests hold
    workers: int = 1  # clips the model server processes in parallel: only for the wait estimate
    clip_seconds_hint: float = 10.0  # seconds per clip assumed until requests have been timed
    limits: dict = field(default_factory=dict)  # the model's request limits, shown by the page and /health


def envelope(status: int, msg: str, headers: dict | None = None) -> web.Response:
    """An error answer in the platform's envelope, with the same HTTP status."""
    return web.Response(status=status, body=error_body(status, msg), content_type="application/json", headers=headers)


def validate(body: bytes) -> None:
    """The proxy's own check of a request body (JSON object, string base64 ``content``, ``format``)."""
    try:
        doc = json.loads(body)
    except (UnicodeDecodeError, ValueError) as e:
        raise BadRequest(
            f'request body is not valid JSON ({e}); send {{"content": "<base64 video>"}} '
            "with Content-Type: application/json"
        ) from None
    if not isinstance(doc, dict):  # parse_body would take a JSON string as a document to parse again
        raise BadRequest(
            f'request body must be a JSON object like {{"content": "<base64 video>"}}, got {type(doc).__name__}'
        )
    parse_body(doc)


# ----------------------------------------------------------------------------- the queue


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
    running: bool = False
    go: asyncio.Future = field(default_factory=lambda: asyncio.get_running_loop().create_future())


class WaitingRoom:
    """First come, first served admission to the model server.

    ``slots`` tickets run at once; the others wait in arrival order. A ticket that cannot start at once
    takes a place in the waiting room, which holds at most ``max_waiting`` tickets and ``max_bytes`` of
    bodies (a request is never refused for bytes when nobody else waits). Seconds per clip are the mean
    of the last 20 timed requests; estimates use them.
    """

    def __init__(self, slots: int, max_waiting: int, max_bytes: int, workers: int = 1, clip_seconds_hint: float = 10.0):
        self.slots, self.max_waiting, self.max_bytes = max(1, slots), max(0, max_waiting), max_bytes
        self.workers = max(1, workers)
        self.clip_seconds_hint = clip_seconds_hint
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

    def record(self, seconds: float) -> None:
        self.recent.append(seconds)

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


CONFIG = web.AppKey("config", ProxyConfig)
BACKEND = web.AppKey("backend", Backend)
ROOM = web.AppKey("room", WaitingRoom)


# ----------------------------------------------------------------------------- handlers


async def predict(request: web.Request) -> web.Response:
    """POST /autotable/predict: validate, wait for a turn, forward to the model server, answer in the envelope."""
    cfg, room, backend = request.app[CONFIG], request.app[ROOM], request.app[BACKEND]
    t0 = request[T0]
    try:
        ticket = room.admit(request.content_length or 0, request.headers.get(REQUEST_ID_HEADER))
    except QueueFull as e:
        return envelope(503, str(e), {"Retry-After": str(e.retry_after)})
    try:
        body = await request.read()
        ticket.nbytes = len(body)
        try:
            await asyncio.to_thread(validate, body)
        except BadRequest as e:
            return envelope(400, str(e))
        try:
            await asyncio.wait_for(room.turn(ticket), timeout=max(0.0, t0 + cfg.timeout_s - time.perf_counter()))
        except TimeoutError:
            return envelope(
                504,
                f"waited {time.perf_counter() - t0:.0f} s in the queue without reaching a worker "
                "(the limit per request is "
                f"{cfg.timeout_s:.0f} s, queue included); retry later or send a shorter clip",
            )
        started = time.perf_counter()
        try:
            status, payload, headers = await backend.predict(body, t0 + cfg.timeout_s - started)
        except TimeoutError:
            return envelope(
                504,
                f"no answer from the model within {cfg.timeout_s:.0f} s "
                "(queue included; the server is overloaded or the clip "
                "is too heavy); retry later or send a shorter clip",
            )
        if status != 200:
            return envelope(status, str(payload))
        timing = headers.get(TIMING_HEADER, "")
        request[TIMING] = timing
        room.record(parse_timing(timing).get("total") or time.perf_counter() - started)
        return web.Response(
            status=200,
            body=success_body(payload, time.perf_counter() - t0),
            content_type="application/json",
            headers=headers,
        )
    finally:
        room.leave(ticket)


async def queue_position(request: web.Request) -> web.Response:
    """GET /autotable/queue?request=<id>: where a request sent with X-FRVSR-Request-Id stands."""
    room = request.app[ROOM]
    ticket = room.by_id.get(request.query.get("request", ""))
    data = {
        "state": "unknown",
        "position": None,
        "estimated_wait_s": None,
        **{k: v for k, v in room.status().items() if k in ("waiting", "running")},
    }
    if ticket is not None:
        ahead = room.position(ticket)
        data.update(
            state="running" if ticket.running else ("waiting" if ticket.ready else "uploading"),
            position=ahead,
            estimated_wait_s=round(room.estimated_wait(ahead), 1),
        )
    return web.json_response({"code": 200, "data": data, "msg": "ok"})


async def health(request: web.Request) -> web.Response:
    """GET /health: 200 when the model server is ready; the queue and the limits in either case."""
    room = request.app[ROOM]
    h = await request.app[BACKEND].health()
    data = {
        "proxy": "ok",
        **h.data,
        "inflight": len(room.tickets),
        "queue": room.status(),
        "limits": request.app[CONFIG].limits,
    }
    code = 200 if h.ready else 503
    return web.json_response({"code": code, "data": data, "msg": h.msg}, status=code)


async def page(request: web.Request) -> web.FileResponse:
    """GET /: the web page (static HTML; its script and style come from /static)."""
    return web.FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})


def log_request(request: web.Request, resp: web.StreamResponse) -> None:
    """One line per request: sizes, status, timings (worker stages and transport); never content.
    Successful GETs (the page, its files, health and queue polls) log at DEBUG: a waiting page polls."""
    elapsed = time.perf_counter() - request[T0]
    timing = request.get(TIMING, "")
    total = parse_timing(timing).get("total")
    transport = f" transport={elapsed - total:.3f}" if total is not None else ""
    log.log(
        logging.DEBUG if request.method == "GET" and resp.status < 400 else logging.INFO,
        "%s %s -> %d in=%d out=%d elapsed=%.3f%s%s",
        request.method,
        request.path,
        resp.status,
        request.content_length or 0,
        resp.content_length or 0,
        elapsed,
        transport,
        f" [{timing}]" if timing else "",
    )


def _too_large(length: int | None, limit: int) -> web.Response:
    seen = f"{length / 2**20:.1f} MiB" if length else "the body"
    resp = envelope(
        413,
        f"request body {seen} is over the limit of {limit / 2**20:.0f} MiB "
        "(the largest accepted video, base64-encoded); "
        "send a shorter or smaller clip (limits: frame area, duration, frames)",
        {"Connection": "close"},
    )
    resp.force_close()
    return resp


# ----------------------------------------------------------------------------- the application


def create_app(cfg: ProxyConfig, backend: Backend) -> web.Application:
    """The proxy in front of ``backend``; the backend is started and closed with the application."""

    async def too_large_first(request: web.Request):
        """``Expect: 100-continue``: refuse an oversized upload before the client sends it."""
        if request.content_length is not None and request.content_length > cfg.max_body_bytes:
            return _too_large(request.content_length, cfg.max_body_bytes)
        if request.version >= (1, 1) and request.headers.get("Expect", "").lower() == "100-continue":
            await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            request.writer.output_size = 0
        return None

    @web.middleware
    async def log_and_envelope(request: web.Request, handler):
        request[T0] = time.perf_counter()
        resp = await _envelope_errors(request, handler)
        log_request(request, resp)
        return resp

    async def _envelope_errors(request: web.Request, handler):
        if request.content_length is not None and request.content_length > cfg.max_body_bytes:
            return _too_large(request.content_length, cfg.max_body_bytes)  # before reading a byte of it
        try:
            return await handler(request)
        except web.HTTPException as e:
            if e.status == 413:
                return _too_large(request.content_length, cfg.max_body_bytes)
            if e.status == 405:
                allowed = ", ".join(sorted(getattr(e, "allowed_methods", ()) or ["POST"]))
                return envelope(
                    405, f"method {request.method} is not allowed on {request.path}; use {allowed}", {"Allow": allowed}
                )
            if e.status == 404:
                return envelope(
                    404,
                    f"no such endpoint {request.path}; use POST {PREDICT_PATH}, GET {HEALTH_PATH} "
                    f"or the page at GET {PAGE_PATH}",
                )
            return envelope(e.status, e.reason or e.text or "error")

    async def backend_ctx(app: web.Application):
        await backend.start()
        yield
        await backend.close()

    app = web.Application(middlewares=[log_and_envelope], client_max_size=cfg.max_body_bytes)
    app[CONFIG] = cfg
    app[BACKEND] = backend
    app[ROOM] = WaitingRoom(cfg.max_inflight, cfg.max_queued, cfg.max_queued_bytes, cfg.workers, cfg.clip_seconds_hint)
    app.add_routes(
        [
            web.post(PREDICT_PATH, predict, expect_handler=too_large_first),
            web.get(HEALTH_PATH, health),
            web.get(QUEUE_PATH, queue_position),
            web.get(PAGE_PATH, page),
            web.static(STATIC_PATH, STATIC_DIR),
        ]
    )
    app.cleanup_ctx.append(backend_ctx)
    return app


async def serve(cfg: ProxyConfig, backend: Backend, host: str = "127.0.0.1", port: int = 8080) -> web.AppRunner:
    """Start the proxy on ``host:port``; returns the runner (``await runner.cleanup()`` to stop)."""
    runner = web.AppRunner(create_app(cfg, backend), access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_address=True)
    await site.start()
    return runner


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="TorchServe model name")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--inference_url", default="http://127.0.0.1:8085")
    p.add_argument("--management_url", default="http://127.0.0.1:8081")
    p.add_argument("--key_file", type=Path, default=None, help="TorchServe's key_file.json (omit if token auth is off)")
    p.add_argument("--max_body_mb", type=float, default=ProxyConfig.max_body_bytes / 2**20)
    p.add_argument("--timeout_s", type=float, default=ProxyConfig.timeout_s)
    p.add_argument("--max_inflight", type=int, default=ProxyConfig.max_inflight)
    p.add_argument("--max_queued", type=int, default=ProxyConfig.max_queued)
    p.add_argument("--max_queued_mb", type=float, default=ProxyConfig.max_queued_bytes / 2**20)
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    cfg = ProxyConfig(
        int(a.max_body_mb * 2**20), a.timeout_s, a.max_inflight, a.max_queued, int(a.max_queued_mb * 2**20)
    )
    backend = TorchServeBackend(
        a.model, a.inference_url, a.management_url, a.key_file, connections=max(8, 2 * a.max_inflight)
    )
    web.run_app(create_app(cfg, backend), host=a.host, port=a.port, access_log=None)


if __name__ == "__main__":
    main()
