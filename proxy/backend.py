"""The seam between the front door and the model server.

The proxy (``proxy.app``) sees a model server only through :class:`Backend`: ``predict(body, timeout_s)``
returns ``(status, payload, headers)`` already in the public contract (payload: the base64 video for 200,
else the message for the envelope) and ``health()`` says whether a model is ready. :class:`TorchServeBackend`
is the one implementation: it owns TorchServe's tokens (``key_file.json``, renewal through the token API
and one retry when a key is refused), its URLs and the mapping of TorchServe's errors to the contract.
Putting the same handler pipeline behind another server means writing another class like it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple, Protocol

from aiohttp import (
    ClientError,
    ClientHandlerType,
    ClientRequest,
    ClientResponse,
    ClientSession,
    ClientTimeout,
    TCPConnector,
)
from yarl import URL

from wire import v1
from wire.contract import HEADER_PREFIX, TIMING_HEADER, format_timing
from wire.tokens import read_key_file

log = logging.getLogger(__name__)

RENEW_MARGIN_S = 60.0  # renew the inference key this long before TorchServe says it expires
INVALID_KEY = "InvalidKeyException"  # TorchServe's error type for a refused token


class Reply(NamedTuple):
    """A model server's answer in the public contract's terms."""

    status: int  # the HTTP status the client gets
    payload: bytes | str  # 200: the base64 video (bytes); otherwise the envelope's message
    headers: dict[str, str]  # X-FRVSR-* headers to pass on (timing, format, model)


class Health(NamedTuple):
    ready: bool  # a model worker can take requests
    data: dict  # merged into GET /health's data
    msg: str  # why not ready ("ok" when ready)


class Backend(Protocol):
    """What the proxy needs from a model server."""

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    model: str  # the default model's name

    async def predict(self, body: bytes, timeout_s: float, model: str | None = None) -> Reply:
        """Forward a validated request body to ``model`` (None: the default); ``TimeoutError`` after ``timeout_s``."""
        ...

    async def health(self) -> Health: ...

    async def models(self) -> dict[str, dict]:
        """The served models by name, each ``{"ready": bool, ...}`` (cached for a few seconds)."""
        ...


MODELS_CACHE_S = 5.0  # how long a list of the served models is reused


class ModelsCache:
    """The last list of served models, reused for ``MODELS_CACHE_S`` (the page and every named request ask)."""

    def __init__(self):
        self.value: dict[str, dict] | None = None
        self.at = -math.inf
        self.lock = asyncio.Lock()

    async def get(self, fetch) -> dict[str, dict]:
        async with self.lock:
            if self.value is None or time.monotonic() - self.at > MODELS_CACHE_S:
                self.value, self.at = await fetch(), time.monotonic()
            return self.value


# ----------------------------------------------------------------------------- TorchServe's tokens


class TokenSource:
    """TorchServe's keys from key_file.json (re-read when it changes); renews the inference key when it expires."""

    def __init__(self, key_file: Path | None, management_url: str, renew_margin_s: float = RENEW_MARGIN_S):
        self.key_file = Path(key_file) if key_file else None
        self.management_url = management_url
        self.renew_margin_s = renew_margin_s
        self._mtime: int | None = None
        self._keys: dict[str, str] = {}
        self._expires: dict[str, float | None] = {}
        self._lock = asyncio.Lock()

    def _load(self) -> None:
        """Blocking (stat, read): runs in a thread."""
        mtime = self.key_file.stat().st_mtime_ns
        if mtime != self._mtime:
            self._keys, self._expires = read_key_file(self.key_file)
            self._mtime = mtime

    async def key(self, kind: str) -> str | None:
        if self.key_file is None:
            return None
        for attempt in range(3):
            try:
                await asyncio.to_thread(self._load)
                break
            except (OSError, ValueError):  # missing or half-written: TorchServe is (re)writing it
                if attempt < 2:
                    await asyncio.sleep(0.05)
        return self._keys.get(kind)

    def expiring(self, kind: str) -> bool:
        exp = self._expires.get(kind)
        return exp is not None and exp - time.time() < self.renew_margin_s

    async def inference_key(self, session: ClientSession) -> str | None:
        key = await self.key("inference")
        if key is not None and self.expiring("inference"):
            key = await self.renew(session, key)
        return key

    async def renew(self, session: ClientSession, stale: str | None) -> str | None:
        """Ask TorchServe for a new inference key (once, however many requests noticed the old one)."""
        async with self._lock:
            current = await self.key("inference")
            if current != stale and not self.expiring("inference"):
                return current  # another request renewed it meanwhile
            api_key = await self.key("API")
            try:
                async with session.post(
                    f"{self.management_url}/token",
                    params={"type": "inference"},
                    headers=auth(api_key),
                    timeout=ClientTimeout(total=10),
                    middlewares=(),  # this call carries its own key: not the auth middleware's
                ) as r:
                    ok = r.status == 200
                    if not ok:
                        log.warning("renewing the inference key failed: HTTP %d", r.status)
            except (TimeoutError, ClientError) as e:
                log.warning("renewing the inference key failed: %s", e)
                ok = False
            self._mtime = None  # TorchServe rewrote the file (or we re-read it to be sure)
            fresh = await self.key("inference")
            if ok and fresh != stale:
                log.info("inference key renewed")
            elif ok:
                log.warning("TorchServe accepted the renewal but key_file.json still holds the old inference key")
            return fresh


def auth(key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"} if key else {}


class TorchServeAuth:
    """aiohttp client middleware: every call to TorchServe carries its key (the management key for the
    management API, the inference key, renewed before it expires, for the rest); a call whose inference
    key TorchServe refuses is retried once with a renewed key."""

    def __init__(self, tokens: TokenSource):
        self.tokens = tokens
        self.management = URL(tokens.management_url)  # compared as URLs: host case and default ports normalised

    def _is_management(self, url: URL) -> bool:
        return url.origin() == self.management.origin() and url.path.startswith(self.management.path.rstrip("/"))

    async def __call__(self, req: ClientRequest, handler: ClientHandlerType) -> ClientResponse:
        if self.tokens.key_file is None:
            return await handler(req)
        if self._is_management(req.url):
            req.headers.update(auth(await self.tokens.key("management")))
            return await handler(req)
        key = await self.tokens.inference_key(req.session)
        req.headers.update(auth(key))
        resp = await handler(req)
        if resp.status == 200 or torchserve_message(await resp.read())[0] != INVALID_KEY:
            return resp
        resp.release()
        req.headers.update(auth(await self.tokens.renew(req.session, key)))
        return await handler(req)  # refused again: the caller says so


class BearerFile:
    """aiohttp client middleware: ``Authorization: Bearer <token>`` from a file, re-read when it changes (a
    mounted Kubernetes secret or a projected service-account token rotates in place)."""

    def __init__(self, token_file: Path):
        self.token_file = Path(token_file)
        self._token: tuple[int, str] | None = None  # (mtime_ns, token)

    def _read(self) -> str | None:
        """Blocking (stat, read): runs in a thread."""
        mtime = self.token_file.stat().st_mtime_ns
        if self._token is None or self._token[0] != mtime:
            self._token = (mtime, self.token_file.read_text().strip())
        return self._token[1]

    async def __call__(self, req: ClientRequest, handler: ClientHandlerType) -> ClientResponse:
        try:
            token = await asyncio.to_thread(self._read)
        except OSError as e:
            log.warning("cannot read the token file %s: %s", self.token_file, e)
            token = self._token[1] if self._token else None
        req.headers.update(auth(token))
        return await handler(req)


def torchserve_message(body: bytes) -> tuple[str, str]:
    """(type, message) of a TorchServe error body ``{"code", "type", "message"}``."""
    try:
        d = json.loads(body)
        return str(d.get("type", "")), str(d.get("message", "")).strip()
    except (ValueError, AttributeError):
        return "", body[:300].decode(errors="replace").strip()


# ----------------------------------------------------------------------------- the backend


def contract_reply(status: int, message: str) -> Reply:
    """A model server's error status -> the contract's: the handler's own 4xx pass through with their message;
    overload, timeout and worker-death statuses get a message saying what to do."""
    if status in (400, 415, 422):
        return Reply(status, message, {})
    if status == 503:
        return Reply(503, f"the model has no free worker or its queue is full ({message}); retry in a few seconds", {})
    if status in (408, 504):
        return Reply(504, f"the model did not answer in time ({message}); send a shorter clip or retry later", {})
    if status == 507 and "worker died" in message.lower():
        # TorchServe answers 507 for any worker death (a crash or kill), not only for memory
        return Reply(
            503,
            f"the model worker stopped during this request and is being restarted ({message}); retry in a few seconds",
            {},
        )
    if status == 507:
        return Reply(507, f"the server ran out of memory on this clip ({message}); send a smaller clip", {})
    if 400 <= status < 500:
        return Reply(status, message or f"TorchServe answered HTTP {status}", {})
    return Reply(
        500,
        f"inference failed on the server ({message or status}); the operator can see why in the TorchServe log",
        {},
    )


class TorchServeBackend:
    """``POST /predictions/<model>`` (the model's default version) and health from TorchServe's APIs."""

    def __init__(
        self,
        model: str,
        inference_url: str = "http://127.0.0.1:8085",
        management_url: str = "http://127.0.0.1:8081",
        key_file: Path | None = None,
        connections: int = 8,
        renew_margin_s: float = RENEW_MARGIN_S,
    ):
        self.model = model
        self.inference_url = inference_url
        self.management_url = management_url
        self.tokens = TokenSource(key_file, management_url, renew_margin_s)
        self.connections = connections
        self.session: ClientSession | None = None
        self._models = ModelsCache()

    async def start(self) -> None:
        # no total timeout on the session: each request sets its own; keep connections to TorchServe alive
        self.session = ClientSession(
            connector=TCPConnector(limit=self.connections),
            timeout=ClientTimeout(total=None),
            middlewares=(TorchServeAuth(self.tokens),),
        )

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()

    async def predict(self, body: bytes, timeout_s: float, model: str | None = None) -> Reply:
        model = model or self.model
        url = f"{self.inference_url}/predictions/{model}"
        timeout = ClientTimeout(total=max(0.001, timeout_s))
        headers = {"Content-Type": "application/json"}
        try:
            async with self.session.post(url, data=body, headers=headers, timeout=timeout) as r:
                payload = await r.read()
                if r.status == 200:
                    passed = {k: v for k, v in r.headers.items() if k.lower().startswith(HEADER_PREFIX.lower())}
                    return Reply(200, payload.strip(), passed)
                kind, message = torchserve_message(payload)
        except ClientError as e:
            if isinstance(e, TimeoutError):  # aiohttp's read/connect timeouts are ClientErrors too: the caller's 504
                raise
            return Reply(
                503,
                f"TorchServe is not reachable at {self.inference_url} ({type(e).__name__}); "
                "it may be down or restarting, retry in a minute",
                {},
            )
        if kind == INVALID_KEY:  # our token, not the client's fault (TorchServeAuth already renewed it once)
            return Reply(
                503,
                "TorchServe rejected the proxy's inference key (even after renewing it); "
                "the operator should restart client_infer.py",
                {},
            )
        return self.map_error(r.status, message, model)

    def map_error(self, status: int, message: str, model: str | None = None) -> Reply:
        """TorchServe's error statuses -> the contract's (a 404 here means the model is not registered)."""
        if status == 404:
            return Reply(
                503,
                f"model {model or self.model!r} is not registered in TorchServe ({message}); "
                "register it with the management API (see docs/serving.md)",
                {},
            )
        return contract_reply(status, message)

    async def models(self) -> dict[str, dict]:
        return await self._models.get(self._list_models)

    async def _list_models(self) -> dict[str, dict]:
        """TorchServe's registered models (management API), each with its default version's workers."""
        timeout = ClientTimeout(total=5)
        out: dict[str, dict] = {}
        try:
            async with self.session.get(f"{self.management_url}/models", params={"limit": "100"}, timeout=timeout) as r:
                names = [m["modelName"] for m in (await r.json(content_type=None)).get("models", [])]
            for name in names:
                async with self.session.get(f"{self.management_url}/models/{name}", timeout=timeout) as r:
                    d = (await r.json(content_type=None))[0] if r.status == 200 else {}
                workers = [w.get("status") for w in d.get("workers", [])]
                out[name] = {"ready": "READY" in workers, "version": d.get("modelVersion")}
        except (TimeoutError, ClientError, ValueError, KeyError, IndexError, AttributeError) as e:
            log.warning("cannot list TorchServe's models: %s", e)
            return {self.model: {"ready": False}}
        return out

    async def health(self) -> Health:
        data: dict = {"torchserve": "unreachable", "model": {"name": self.model, "ready": False}}
        timeout = ClientTimeout(total=5)
        try:
            async with self.session.get(f"{self.inference_url}/ping", timeout=timeout) as r:
                data["torchserve"] = (
                    (await r.json(content_type=None)).get("status", f"HTTP {r.status}")
                    if r.status == 200
                    else f"HTTP {r.status}"
                )
            async with self.session.get(f"{self.management_url}/models/{self.model}", timeout=timeout) as r:
                if r.status == 200:
                    d = (await r.json(content_type=None))[0]
                    workers = [w.get("status") for w in d.get("workers", [])]
                    data["model"] = {
                        "name": self.model,
                        "version": d.get("modelVersion"),
                        "workers": workers,
                        "queue": d.get("jobQueueStatus", {}),
                        "ready": "READY" in workers,
                    }
                else:
                    data["model"]["error"] = torchserve_message(await r.read())[1]
        except (TimeoutError, ClientError, ValueError, KeyError, IndexError) as e:
            data["error"] = f"{type(e).__name__}: {e}"[:200]
        ready = bool(data["model"].get("ready"))
        why = (
            data.get("error")
            or data["model"].get("error")
            or f"TorchServe {data['torchserve']}, workers {data['model'].get('workers')}"
        )
        return Health(ready, data, "ok" if ready else f"the model is not ready: {why}")


# ----------------------------------------------------------------------------- KServe


class KServeBackend:
    """A KServe InferenceService's predictor, v1 protocol: ``POST <url>:predict`` with ``{"instances": [body]}``
    and health from ``GET <url>`` (``{"name": ..., "ready": true}``), ``url`` being ``.../v1/models/<name>``.

    ``token_file`` (optional) holds a bearer token sent with every call, re-read when it changes (a mounted
    Kubernetes secret or a projected service-account token rotates in place).
    """

    def __init__(self, url: str | Sequence[str], token_file: Path | None = None, connections: int = 8):
        self.urls: dict[str, str] = {}  # model name -> its v1 URL; the first is the default
        for u in [url] if isinstance(url, str) else list(url):
            u = u.rstrip("/")
            m = re.fullmatch(r"(https?://[^/]+(?:/[^?#]*)?)/v1/models/([^/:?#]+)", u)
            if not m:
                raise ValueError(
                    f"KServe URL {u!r} must be the predictor's v1 model URL, http(s)://<host>/v1/models/<name>, "
                    "e.g. http://frvsr-predictor.frvsr.svc.cluster.local/v1/models/frvsr (see docs/deploy.md)"
                )
            if m.group(2) in self.urls:
                raise ValueError(f"two KServe URLs name the model {m.group(2)!r}; each predictor needs its own name")
            self.urls[m.group(2)] = u
        if not self.urls:
            raise ValueError("give at least one KServe URL")
        self.model, self.url = next(iter(self.urls.items()))
        self.token_file = Path(token_file) if token_file else None
        self.connections = connections
        self.session: ClientSession | None = None
        self._models = ModelsCache()

    async def start(self) -> None:
        self.session = ClientSession(
            connector=TCPConnector(limit=self.connections),
            timeout=ClientTimeout(total=None),
            middlewares=(BearerFile(self.token_file),) if self.token_file is not None else (),
        )

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()

    async def predict(self, body: bytes, timeout_s: float, model: str | None = None) -> Reply:
        timeout = ClientTimeout(total=max(0.001, timeout_s))
        url = self.urls.get(model or self.model, self.url)
        try:
            async with self.session.post(
                url + v1.V1_PREDICT_SUFFIX,
                data=v1.request(body),
                headers={"Content-Type": "application/json"},
                timeout=timeout,
            ) as r:
                payload = await r.read()
                passed = {k: v for k, v in r.headers.items() if k.lower().startswith(HEADER_PREFIX.lower())}
                status = r.status
        except ClientError as e:
            if isinstance(e, TimeoutError):  # aiohttp's read/connect timeouts are ClientErrors too: the caller's 504
                raise
            return Reply(
                503, f"the KServe predictor is not reachable at {url} ({type(e).__name__}); retry in a minute", {}
            )
        if status == 200:
            try:
                content, elapsed = await asyncio.to_thread(v1.read_reply, payload)
            except ValueError as e:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
                return Reply(500, f"the KServe predictor answered 200 without a v1 prediction ({e})", {})
            if TIMING_HEADER not in passed and elapsed is not None:  # KServe's model server drops our headers
                passed[TIMING_HEADER] = format_timing({"total": elapsed})
            return Reply(200, content, passed)
        return self.map_error(status, v1.error_message(payload), url)

    def map_error(self, status: int, message: str, url: str | None = None) -> Reply:
        """KServe's statuses -> the contract's: credentials and a wrong URL are the operator's to fix (503)."""
        if status in (401, 403):
            return Reply(
                503,
                f"the KServe predictor refused the proxy's credentials (HTTP {status}: {message}); "
                "the operator should check --kserve_token_file",
                {},
            )
        if status == 404:
            return Reply(
                503,
                f"no model at {url or self.url} (HTTP 404: {message}); the operator should check --kserve_url "
                "(the InferenceService's host and the model name in its config.properties)",
                {},
            )
        return contract_reply(status, message)

    async def models(self) -> dict[str, dict]:
        return await self._models.get(self._list_models)

    async def _list_models(self) -> dict[str, dict]:
        """The configured predictors, each with its model-ready state (``GET <url>``)."""
        out = {}
        for name, url in self.urls.items():
            try:
                async with self.session.get(url, timeout=ClientTimeout(total=5)) as r:
                    ready = r.status == 200 and json.loads(await r.read()).get("ready") is True
            except (TimeoutError, ClientError, ValueError, AttributeError):
                ready = False
            out[name] = {"ready": ready}
        return out

    async def health(self) -> Health:
        data: dict = {"kserve": self.url, "model": {"name": self.model, "ready": False}}
        try:
            async with self.session.get(self.url, timeout=ClientTimeout(total=5)) as r:
                body = await r.read()
                if r.status == 200:
                    d = json.loads(body)
                    data["model"] = {"name": d.get("name", self.model), "ready": d.get("ready") is True}
                else:
                    data["model"]["error"] = f"HTTP {r.status}: {v1.error_message(body)}"
        except (TimeoutError, ClientError, ValueError, AttributeError) as e:
            data["error"] = f"{type(e).__name__}: {e}"[:200]
        ready = bool(data["model"].get("ready"))
        why = data.get("error") or data["model"].get("error") or "the predictor says ready=false"
        return Health(ready, data, "ok" if ready else f"the model is not ready at {self.url}: {why}")
