"""The public front door on one port: ``POST /autotable/predict``, ``GET /health``, the queue and the web page.

    success: 200 {"code": 200, "data": {"content": "<base64 4x video>", "elapsed_time": 1.2345}, "msg": "ok"}
    error:   <status> {"code": <status>, "data": null, "msg": "<what is wrong and what to do>"}

The proxy validates a body itself (a bad request never waits for a worker), then queues it: at most
``max_inflight`` requests are with the model server at once and the rest wait here in arrival order, in a
waiting room bounded by a count and by the bytes of the bodies it holds. Only past that bound does a
request get 503 with ``Retry-After`` (the estimated wait). The wait counts toward the request's timeout.
The model server is reached through ``proxy.backend`` (TorchServe, or a KServe predictor). A request may name
one of the served models (``"model"``); each model has its own waiting room, time limit and estimate of
seconds per pixel-frame, so a slow model's queue never holds up the default's. ``GET /autotable/models``
lists them; ``GET /autotable/queue`` tells a waiting request its place and the time left (from its clip's
frames and size, read from the container's header with PyAV, no decoding). ``GET /`` serves the page in
``proxy/static/`` (plain HTML/JS/CSS, nothing from the internet), which uses the same predict route.
Everything is asyncio (aiohttp): a long super-resolution never blocks other requests; JSON and base64
checks of large bodies run in threads. It logs sizes, statuses and timings, never content.

It runs inside ``client_infer.py`` (``serving.service``, in front of its TorchServe) or alone in front of a
KServe predictor (``python -m proxy``); both start it through ``proxy.run``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field, fields
from pathlib import Path

from aiohttp import web

from proxy.backend import Backend
from proxy.probe import clip_size
from proxy.room import QueueFull, Ticket, WaitingRoom
from wire.contract import (
    HEALTH_PATH,
    MODELS_PATH,
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
from wire.cost import Clip
from wire.errors import BadRequest
from wire.limits import Limits
from wire.payload import VideoRequest, parse_body

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).resolve().parent / "static"
T0 = web.RequestKey("t0", float)  # when the request arrived (perf_counter)
TIMING = web.RequestKey("timing", str)  # the worker's stage timings, for the log line


@dataclass(frozen=True)
class Lane:
    """One served model's own queue and time limit (``ProxyConfig.models``); its defaults are the default model's
    (``ProxyConfig`` is that model's lane and the proxy's own settings)."""

    timeout_s: float = 1200.0  # for one request from its arrival, queue wait included; then 504
    max_inflight: int = 2  # requests with the model server at once (processing or in its own small queue)
    max_queued: int = 32  # requests waiting here beyond those (uploading, validated, waiting their turn)
    max_queued_bytes: int = 512 * 2**20  # bytes of the bodies those waiting requests hold
    workers: int = 1  # clips the model server processes in parallel: only for the wait estimate
    clip_seconds_hint: float = 10.0  # seconds per clip assumed until requests have been timed
    frame_cost_hint: tuple[float, float] | None = None  # measured at start-up: (s per frame, s per pixel-frame)
    about: str = ""  # one line on what the model is for and when to pick it (the page's model picker shows it)


@dataclass(frozen=True)
class ProxyConfig(Lane):
    """The default model's lane (``Lane``'s fields) and what the proxy holds for every model."""

    # the largest request at the default limits; client_infer.py gives TorchServe the same max_request_size
    max_body_bytes: int = Limits().max_body_bytes()
    limits: dict = field(default_factory=dict)  # the model's request limits, shown by the page and /health
    # other served models' lanes by name; a model the backend serves that is not here (a version registered
    # through TorchServe's management API) gets the default's settings in a room of its own
    models: dict[str, Lane] = field(default_factory=dict)

    def lane(self, name: str | None) -> Lane:
        """The settings of model ``name``'s queue (None, or a name without its own lane: the default's)."""
        if name in self.models:
            return self.models[name]
        return Lane(**{f.name: getattr(self, f.name) for f in fields(Lane)})


def envelope(status: int, msg: str, headers: dict | None = None) -> web.Response:
    """An error answer in the platform's envelope, with the same HTTP status."""
    return web.Response(status=status, body=error_body(status, msg), content_type="application/json", headers=headers)


def validate(body: bytes) -> tuple[VideoRequest, Clip | None]:
    """The proxy's check of a request body before it waits for a worker (the one parser, JSON only), and the
    clip's size from its header (None when the header does not say; the model server judges the file)."""
    req = parse_body(body, allow_raw=False)
    return req, clip_size(req.video)


class Rooms:
    """A waiting room per served model, made on first use from its lane; looks a request id up in all."""

    def __init__(self, cfg: ProxyConfig, default_model: str):
        self.cfg, self.default = cfg, default_model
        self.rooms: dict[str, WaitingRoom] = {}

    def __call__(self, name: str | None) -> WaitingRoom:
        name = name or self.default
        if name not in self.rooms:
            lane = self.cfg.lane(None if name == self.default else name)
            self.rooms[name] = WaitingRoom(
                lane.max_inflight, lane.max_queued, lane.max_queued_bytes, lane.workers, lane.clip_seconds_hint,
                lane.frame_cost_hint,
            )  # fmt: skip
        return self.rooms[name]

    def find(self, request_id: str) -> tuple[str, WaitingRoom, Ticket] | None:
        for name, room in self.rooms.items():
            if request_id in room.by_id:
                return name, room, room.by_id[request_id]
        return None


CONFIG = web.AppKey("config", ProxyConfig)
BACKEND = web.AppKey("backend", Backend)
ROOMS = web.AppKey("rooms", Rooms)


# ----------------------------------------------------------------------------- handlers


async def predict(request: web.Request) -> web.Response:
    """POST /autotable/predict: validate, wait for a turn, forward to the model server, answer in the envelope."""
    cfg, rooms, backend = request.app[CONFIG], request.app[ROOMS], request.app[BACKEND]
    t0 = request[T0]
    request_id = request.headers.get(REQUEST_ID_HEADER)
    room = rooms(None)  # uploading: counted in the default's room until the body names its model
    try:
        ticket = room.admit(request.content_length or 0, request_id)
    except QueueFull as e:
        return envelope(503, str(e), {"Retry-After": str(e.retry_after)})
    try:
        body = await request.read()
        ticket.nbytes = len(body)
        try:
            req, clip = await asyncio.to_thread(validate, body)
        except BadRequest as e:
            return envelope(400, str(e))
        model = req.model if req.model and req.model != rooms.default else None
        if model is not None:
            served = await backend.models()
            if model not in served:
                return envelope(
                    400, f'unknown "model" {model!r}; the served models are {sorted(served)} (GET {MODELS_PATH})'
                )
            room.leave(ticket)
            room = rooms(model)
            try:
                ticket = room.admit(len(body), request_id)
            except QueueFull as e:
                return envelope(503, f"{model}: {e}", {"Retry-After": str(e.retry_after)})
        ticket.clip = clip
        timeout_s = cfg.lane(model).timeout_s
        try:
            await asyncio.wait_for(room.turn(ticket), timeout=max(0.0, t0 + timeout_s - time.perf_counter()))
        except TimeoutError:
            return envelope(
                504,
                f"waited {time.perf_counter() - t0:.0f} s in the queue without reaching a worker "
                "(the limit per request is "
                f"{timeout_s:.0f} s, queue included); retry later or send a shorter clip",
            )
        started = time.perf_counter()
        try:
            status, payload, headers = await backend.predict(body, t0 + timeout_s - started, model)
        except TimeoutError:
            return envelope(
                504,
                f"no answer from the model within {timeout_s:.0f} s "
                "(queue included; the server is overloaded or the clip "
                "is too heavy); retry later or send a shorter clip",
            )
        if status != 200:
            return envelope(status, str(payload))
        timing = headers.get(TIMING_HEADER, "")
        request[TIMING] = timing
        room.record(parse_timing(timing).get("total") or time.perf_counter() - started, clip)
        return web.Response(
            status=200,
            body=success_body(payload, time.perf_counter() - t0),
            content_type="application/json",
            headers=headers,
        )
    finally:
        room.leave(ticket)


async def queue_position(request: web.Request) -> web.Response:
    """GET /autotable/queue?request=<id>: where a request sent with X-FRVSR-Request-Id stands, and its time left."""
    rooms = request.app[ROOMS]
    found = rooms.find(request.query.get("request", ""))
    name, room = (found[0], found[1]) if found else (rooms.default, rooms(None))
    data = {
        "state": "unknown",
        "model": name,
        "position": None,
        "estimated_wait_s": None,
        "estimated_time_left_s": None,
        **{k: v for k, v in room.status().items() if k in ("waiting", "running")},
    }
    if found is not None:
        ticket = found[2]
        ahead = room.position(ticket)
        left = room.time_left(ticket)
        data.update(
            state="running" if ticket.running else ("waiting" if ticket.ready else "uploading"),
            position=ahead,
            estimated_wait_s=round(room.estimated_wait(ahead), 1),
            estimated_time_left_s=None if left is None else round(left, 1),
        )
    return web.json_response({"code": 200, "data": data, "msg": "ok"})


async def model_list(request: web.Request) -> web.Response:
    """GET /autotable/models: the served models (the default first), their queues and seconds per frame."""
    return web.json_response({"code": 200, "data": await describe_models(request.app), "msg": "ok"})


async def describe_models(app: web.Application) -> dict:
    cfg, rooms = app[CONFIG], app[ROOMS]
    served = await app[BACKEND].models()
    names = [rooms.default, *sorted(n for n in served if n != rooms.default)]
    area = int(cfg.limits.get("max_pixels") or 0)
    out = []
    for name in names:
        room, lane = rooms(name), cfg.lane(None if name == rooms.default else name)
        times = room.times
        out.append(
            {
                "name": name,
                "default": name == rooms.default,
                "about": lane.about,
                **served.get(name, {"ready": False}),
                "workers": lane.workers,
                "timeout_s": lane.timeout_s,
                "seconds_per_frame_176x144": _rounded(times.per_frame(176 * 144)),
                "seconds_per_frame_at_limit": _rounded(times.per_frame(area)) if area else None,
                "measured_from": "requests" if times.samples else ("start-up" if times.hint is not None else None),
                "queue": {k: v for k, v in room.status().items() if k in ("waiting", "running", "estimated_wait_s")},
            }
        )
    return {"default": rooms.default, "models": out}


def _rounded(x: float | None) -> float | None:
    return None if x is None else round(x, 4)


async def health(request: web.Request) -> web.Response:
    """GET /health: 200 when the model server is ready; the queue and the limits in either case."""
    room = request.app[ROOMS](None)
    h = await request.app[BACKEND].health()
    data = {
        "proxy": "ok",
        **h.data,
        "inflight": len(room.tickets),
        "queue": room.status(),
        "limits": request.app[CONFIG].limits,
        "models": (await describe_models(request.app))["models"],
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
                    f"no such endpoint {request.path}; use POST {PREDICT_PATH}, GET {HEALTH_PATH}, "
                    f"GET {MODELS_PATH} or the page at GET {PAGE_PATH}",
                )
            return envelope(e.status, e.reason or e.text or "error")

    async def backend_ctx(app: web.Application):
        await backend.start()
        yield
        await backend.close()

    app = web.Application(middlewares=[log_and_envelope], client_max_size=cfg.max_body_bytes)
    app[CONFIG] = cfg
    app[BACKEND] = backend
    app[ROOMS] = Rooms(cfg, backend.model)
    app.add_routes(
        [
            web.post(PREDICT_PATH, predict, expect_handler=too_large_first),
            web.get(HEALTH_PATH, health),
            web.get(QUEUE_PATH, queue_position),
            web.get(MODELS_PATH, model_list),
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
