"""The public endpoint: ``POST /autotable/predict`` in front of TorchServe, in the platform's JSON envelope.

    success: 200 {"code": 200, "data": {"content": "<base64 4x video>", "elapsed_time": 1.2345}, "msg": "ok"}
    error:   <status> {"code": <status>, "data": null, "msg": "<what is wrong and what to do>"}

The proxy validates the body itself (so a bad request never waits for a worker), forwards it unchanged
to TorchServe's ``/predictions/<model>`` (the model's default version) with the inference token, and
maps TorchServe's answers to the envelope. It is asyncio (aiohttp): a long super-resolution never
blocks other requests or ``GET /health``; JSON parsing and base64 checks of large bodies run in threads.
It logs sizes, statuses and timings, never content.

    python -m proxy.app --model FRVSR_GAN_default --key_file runs/serve/<run>/key_file.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from aiohttp import ClientError, ClientSession, ClientTimeout, TCPConnector, web

from handler.errors import BadRequest
from handler.payload import parse_body

log = logging.getLogger(__name__)

PREDICT_PATH = "/autotable/predict"
HEALTH_PATH = "/health"
TIMING_HEADER = "X-FRVSR-Timing"  # per-stage seconds from the handler (decode, model, encode, ...)
RENEW_MARGIN_S = 60  # renew the inference key this long before TorchServe says it expires
T0 = web.RequestKey("t0", float)  # when the request arrived (perf_counter)
TIMING = web.RequestKey("timing", str)  # the handler's stage timings, for the log line


@dataclass(frozen=True)
class ProxyConfig:
    model: str  # TorchServe model name; requests go to its default version
    inference_url: str = "http://127.0.0.1:8085"
    management_url: str = "http://127.0.0.1:8081"
    key_file: Path | None = None  # TorchServe's key_file.json; None when token authorization is off
    max_body_bytes: int = 52428800  # = TorchServe's max_request_size
    timeout_s: float = 1200.0  # for one request, TorchServe queue included; then 504
    max_inflight: int = 4  # predictions being processed or queued; more get 503 at once


def envelope(status: int, msg: str, headers: dict | None = None) -> web.Response:
    """An error (or empty) answer in the platform's envelope, with the same HTTP status."""
    body = json.dumps({"code": status, "data": None, "msg": msg})
    return web.Response(status=status, text=body, content_type="application/json", headers=headers)


def success(content: bytes, elapsed_s: float, headers: dict | None = None) -> web.Response:
    """200 with the base64 video. Built as bytes: the content can be hundreds of MB and never needs escaping."""
    body = b'{"code": 200, "data": {"content": "' + content + b'", "elapsed_time": ' + f"{elapsed_s:.4f}".encode() + b'}, "msg": "ok"}'
    return web.Response(status=200, body=body, content_type="application/json", headers=headers)


class TokenSource:
    """TorchServe's keys from key_file.json; renews the inference key (token API) when it expires."""

    def __init__(self, key_file: Path | None, management_url: str):
        self.key_file = Path(key_file) if key_file else None
        self.management_url = management_url
        self._mtime = None
        self._keys: dict = {}
        self._expires: dict = {}
        self._lock = asyncio.Lock()

    def _load(self) -> None:
        if self.key_file is None:
            return
        st = self.key_file.stat()
        if st.st_mtime_ns == self._mtime:
            return
        data = json.loads(self.key_file.read_text())  # TorchServe rewrites it in place: retried by the caller
        self._keys = {k: v.get("key") for k, v in data.items() if isinstance(v, dict)}
        self._expires = {k: _parse_time(v.get("expiration time")) for k, v in data.items() if isinstance(v, dict)}
        self._mtime = st.st_mtime_ns

    def key(self, kind: str) -> str | None:
        if self.key_file is None:
            return None
        for _ in range(3):
            try:
                self._load()
                break
            except (OSError, ValueError):  # missing or half-written: TorchServe is (re)writing it
                time.sleep(0.05)
        return self._keys.get(kind)

    def expiring(self, kind: str) -> bool:
        exp = self._expires.get(kind)
        return exp is not None and exp - time.time() < RENEW_MARGIN_S

    async def inference_key(self, session: ClientSession) -> str | None:
        key = self.key("inference")
        if key is not None and self.expiring("inference"):
            key = await self.renew(session, key)
        return key

    async def renew(self, session: ClientSession, stale: str | None) -> str | None:
        """Ask TorchServe for a new inference key (once, however many requests noticed the old one)."""
        async with self._lock:
            current = self.key("inference")
            if current != stale and not self.expiring("inference"):
                return current  # another request renewed it meanwhile
            api_key = self.key("API")
            try:
                async with session.post(
                    f"{self.management_url}/token", params={"type": "inference"},
                    headers={"Authorization": f"Bearer {api_key}"}, timeout=ClientTimeout(total=10),
                ) as r:
                    if r.status != 200:
                        log.warning("renewing the inference key failed: HTTP %d", r.status)
            except (ClientError, asyncio.TimeoutError) as e:
                log.warning("renewing the inference key failed: %s", e)
            self._mtime = None
            log.info("inference key renewed")
            return self.key("inference")

    def auth(self, key: str | None) -> dict:
        return {"Authorization": f"Bearer {key}"} if key else {}


def _parse_time(s: str | None) -> float | None:
    if not s:
        return None
    try:  # '2026-01-01T10:00:00.123456789Z': Python takes at most microseconds
        s = s.rstrip("Z")
        head, _, frac = s.partition(".")
        return datetime.fromisoformat(f"{head}.{(frac or '0')[:6]}").replace(tzinfo=timezone.utc).timestamp()
    except ValueError:
        return None


def _torchserve_message(body: bytes) -> tuple[str, str]:
    """(type, message) of a TorchServe error body ``{"code", "type", "message"}``."""
    try:
        d = json.loads(body)
        return str(d.get("type", "")), str(d.get("message", "")).strip()
    except ValueError:
        return "", body[:300].decode(errors="replace").strip()


def validate(body: bytes) -> None:
    """The proxy's own check of a request body (JSON object, string base64 ``content``, ``format``)."""
    try:
        doc = json.loads(body)
    except (UnicodeDecodeError, ValueError) as e:
        raise BadRequest(f'request body is not valid JSON ({e}); send {{"content": "<base64 video>"}} with Content-Type: application/json') from None
    if not isinstance(doc, dict):  # parse_body would take a JSON string as a document to parse again
        raise BadRequest(f'request body must be a JSON object like {{"content": "<base64 video>"}}, got {type(doc).__name__}')
    parse_body(doc)


class Proxy:
    def __init__(self, cfg: ProxyConfig):
        self.cfg = cfg
        self.tokens = TokenSource(cfg.key_file, cfg.management_url)
        self.session: ClientSession | None = None
        self.inflight = 0

    async def start(self, app: web.Application) -> None:
        # no total timeout on the session: each request sets its own; keep connections to TorchServe alive
        self.session = ClientSession(connector=TCPConnector(limit=max(8, 2 * self.cfg.max_inflight)), timeout=ClientTimeout(total=None))

    async def close(self, app: web.Application) -> None:
        if self.session is not None:
            await self.session.close()

    # ------------------------------------------------------------------------- POST /autotable/predict

    async def predict(self, request: web.Request) -> web.StreamResponse:
        t0 = request[T0]
        if self.inflight >= self.cfg.max_inflight:
            return envelope(503, f"the service is busy ({self.inflight} videos in progress); retry in a few seconds", {"Retry-After": "5"})
        self.inflight += 1
        try:
            return await self._predict(request, t0)
        finally:
            self.inflight -= 1

    async def _predict(self, request: web.Request, t0: float) -> web.Response:
        body = await request.read()
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(None, validate, body)
        except BadRequest as e:
            return envelope(400, str(e))
        url = f"{self.cfg.inference_url}/predictions/{self.cfg.model}"
        timeout = ClientTimeout(total=self.cfg.timeout_s)
        try:
            for attempt in range(2):
                key = await self.tokens.inference_key(self.session)
                headers = {"Content-Type": "application/json", **self.tokens.auth(key)}
                async with self.session.post(url, data=body, headers=headers, timeout=timeout) as r:
                    payload = await r.read()
                    if r.status == 200:
                        timing = r.headers.get(TIMING_HEADER, "")
                        elapsed = time.perf_counter() - t0
                        request[TIMING] = timing
                        hdrs = {k: v for k, v in r.headers.items() if k.lower().startswith("x-frvsr-")}
                        return success(payload.strip(), elapsed, hdrs)
                    kind, message = _torchserve_message(payload)
                    if kind == "InvalidKeyException":  # our token, not the client's fault
                        if attempt == 0 and self.cfg.key_file is not None:
                            await self.tokens.renew(self.session, key)
                            continue
                        break
                    return self._map_error(r.status, kind, message)
        except asyncio.TimeoutError:
            return envelope(504, f"no answer from the model within {self.cfg.timeout_s:.0f} s (the server is overloaded or the clip is too heavy); retry later or send a shorter clip")
        except ClientError as e:
            return envelope(503, f"TorchServe is not reachable at {self.cfg.inference_url} ({type(e).__name__}); it may be down or restarting, retry in a minute")
        return envelope(503, "TorchServe rejected the proxy's inference key (even after renewing it); the operator should restart client_infer.py")

    def _map_error(self, status: int, kind: str, message: str) -> web.Response:
        if status in (400, 415, 422):  # the handler's own client errors, message included
            return envelope(status, message)
        if status == 404:
            return envelope(503, f"model {self.cfg.model!r} is not registered in TorchServe ({message}); register it with the management API (see docs/serving.md)")
        if status == 503:
            return envelope(503, f"the model has no free worker or its queue is full ({message}); retry in a few seconds")
        if status in (408, 504):
            return envelope(504, f"the model did not answer in time ({message}); send a shorter clip or retry later")
        if status == 507 and "worker died" in message.lower():
            # TorchServe answers 507 for any worker death (a crash or kill), not only for memory
            return envelope(503, f"the model worker stopped during this request and is being restarted ({message}); retry in a few seconds")
        if status == 507:
            return envelope(507, f"the server ran out of memory on this clip ({message}); send a smaller clip")
        if 400 <= status < 500:
            return envelope(status, message or f"TorchServe answered HTTP {status}")
        return envelope(500, f"inference failed on the server ({message or status}); the operator can see why in the TorchServe log")

    @staticmethod
    def log_request(request: web.Request, resp: web.StreamResponse) -> None:
        """One line per request: sizes, status, timings (handler stages and transport); never content."""
        elapsed = time.perf_counter() - request[T0]
        in_bytes = request.content_length or 0
        out_bytes = resp.content_length or 0
        timing = request.get(TIMING, "")
        handler_total = _timing_field(timing, "total")
        transport = f" transport={elapsed - handler_total:.3f}" if handler_total is not None else ""
        log.info(
            "%s %s -> %d in=%d out=%d elapsed=%.3f%s%s",
            request.method, request.path, resp.status, in_bytes, out_bytes, elapsed, transport, f" [{timing}]" if timing else "",
        )

    # ------------------------------------------------------------------------- GET /health

    async def health(self, request: web.Request) -> web.Response:
        data = {"proxy": "ok", "torchserve": "unreachable", "model": {"name": self.cfg.model, "ready": False}}
        timeout = ClientTimeout(total=5)
        try:
            key = await self.tokens.inference_key(self.session)
            async with self.session.get(f"{self.cfg.inference_url}/ping", headers=self.tokens.auth(key), timeout=timeout) as r:
                data["torchserve"] = (await r.json(content_type=None)).get("status", f"HTTP {r.status}") if r.status == 200 else f"HTTP {r.status}"
            mkey = self.tokens.key("management")
            async with self.session.get(f"{self.cfg.management_url}/models/{self.cfg.model}", headers=self.tokens.auth(mkey), timeout=timeout) as r:
                if r.status == 200:
                    versions = await r.json(content_type=None)
                    d = versions[0]
                    workers = [w.get("status") for w in d.get("workers", [])]
                    data["model"] = {
                        "name": self.cfg.model, "version": d.get("modelVersion"), "workers": workers,
                        "queue": d.get("jobQueueStatus", {}), "ready": "READY" in workers,
                    }
                else:
                    data["model"]["error"] = _torchserve_message(await r.read())[1]
        except (ClientError, asyncio.TimeoutError, ValueError, KeyError, IndexError) as e:
            data["error"] = f"{type(e).__name__}: {e}"[:200]
        data["inflight"] = self.inflight
        ready = data["model"].get("ready", False)
        code = 200 if ready else 503
        msg = "ok" if ready else "the model is not ready: " + (data.get("error") or data["model"].get("error") or f"TorchServe {data['torchserve']}, workers {data['model'].get('workers')}")
        return web.json_response({"code": code, "data": data, "msg": msg}, status=code)


def _timing_field(timing: str, name: str) -> float | None:
    for part in timing.split(";"):
        k, _, v = part.partition("=")
        if k == name:
            try:
                return float(v)
            except ValueError:
                return None
    return None


PROXY = web.AppKey("proxy", Proxy)


def create_app(cfg: ProxyConfig) -> web.Application:
    proxy = Proxy(cfg)

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
        proxy.log_request(request, resp)
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
                return envelope(405, f"method {request.method} is not allowed on {request.path}; use {allowed}", {"Allow": allowed})
            if e.status == 404:
                return envelope(404, f"no such endpoint {request.path}; use POST {PREDICT_PATH} or GET {HEALTH_PATH}")
            return envelope(e.status, e.reason or e.text or "error")

    app = web.Application(middlewares=[log_and_envelope], client_max_size=cfg.max_body_bytes)
    app.router.add_post(PREDICT_PATH, proxy.predict, expect_handler=too_large_first)
    app.router.add_get(HEALTH_PATH, proxy.health)
    app.on_startup.append(proxy.start)
    app.on_cleanup.append(proxy.close)
    app[PROXY] = proxy
    return app


def _too_large(length: int | None, limit: int) -> web.Response:
    seen = f"{length / 2**20:.1f} MiB" if length else "the body"
    resp = envelope(
        413,
        f"request body {seen} is over the limit of {limit / 2**20:.0f} MiB (the largest accepted video, base64-encoded); "
        "send a shorter or smaller clip (limits: frame area, duration, frames)",
        {"Connection": "close"},
    )
    resp.force_close()
    return resp


async def serve(cfg: ProxyConfig, host: str = "127.0.0.1", port: int = 8080) -> web.AppRunner:
    """Start the proxy on ``host:port``; returns the runner (``await runner.cleanup()`` to stop)."""
    runner = web.AppRunner(create_app(cfg), access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_address=True)
    await site.start()
    return runner


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="TorchServe model name")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--inference_url", default=ProxyConfig.inference_url)
    p.add_argument("--management_url", default=ProxyConfig.management_url)
    p.add_argument("--key_file", type=Path, default=None, help="TorchServe's key_file.json (omit if token auth is off)")
    p.add_argument("--max_body_mb", type=float, default=ProxyConfig.max_body_bytes / 2**20)
    p.add_argument("--timeout_s", type=float, default=ProxyConfig.timeout_s)
    p.add_argument("--max_inflight", type=int, default=ProxyConfig.max_inflight)
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    cfg = ProxyConfig(a.model, a.inference_url, a.management_url, a.key_file, int(a.max_body_mb * 2**20), a.timeout_s, a.max_inflight)
    web.run_app(create_app(cfg), host=a.host, port=a.port, access_log=None)


if __name__ == "__main__":
    main()
