"""KServe's v1 protocol, spoken by the handler and by the proxy's KServe backend (one clip per request):

    POST /v1/models/<name>:predict  {"instances": [{"content": "<base64 video>", "format": "mp4"}]}
    200 {"predictions": [{"content": "<base64 4x video>", "elapsed_time": 4.8123}]}
    GET  /v1/models/<name>          {"name": "<name>", "ready": true}

A request reaches the model server in one of three ways (``PROTOCOLS``), and is answered the same way:
``PLATFORM`` (the platform's body, answered with the plain base64 video), ``V1`` (the whole v1 request,
answered ``{"predictions": [...]}``) and ``V1_INSTANCE`` (one instance that TorchServe's kserve envelope
took out of the request; answered with one prediction, which the envelope wraps). ``unwrap`` tells which
and ``reply`` answers; nothing between them needs to know.
"""

from __future__ import annotations

import json

from wire.errors import BadRequest
from wire.payload import load_json

V1_MODEL_PATH = "/v1/models/{name}"  # GET: {"name": ..., "ready": true} once the model can take requests
V1_PREDICT_SUFFIX = ":predict"  # POST V1_MODEL_PATH + this: the v1 inference route
V1_INSTANCES = "instances"  # request key: a list holding exactly one platform body {"content": ..., "format": ...}
V1_PREDICTIONS = "predictions"  # response key: a list holding one {"content": ..., "elapsed_time": ...}
V1_ELAPSED = "elapsed_time"  # seconds the worker spent on the clip (base64 included)

PLATFORM = "platform"  # {"content": ...}: answered with the plain base64 video
V1 = "v1"  # {"instances": [{"content": ...}]}: answered {"predictions": [{...}]}
V1_INSTANCE = "v1-instance"  # one instance, unwrapped by TorchServe's kserve envelope: answered with one prediction
PROTOCOLS = (PLATFORM, V1, V1_INSTANCE)

V1_USAGE = (
    f'KServe v1 requests carry one clip: send {{"{V1_INSTANCES}": [{{"content": "<base64 video>"}}]}} '
    "to POST /v1/models/<name>:predict"
)


def unwrap(body: object) -> tuple[object, str]:
    """A request body -> (the platform body, ``PLATFORM`` or ``V1``).

    A JSON document given as str/bytes is parsed here (once: the platform body comes back parsed); raw
    video bytes pass through untouched as a platform body.

    Raises:
        BadRequest: not valid JSON, or ``instances`` is not a list of exactly one body.
    """
    if isinstance(body, (bytes, bytearray, str)):
        head = body[:64].lstrip()
        if not head.startswith(b"{" if isinstance(head, (bytes, bytearray)) else "{"):
            return body, PLATFORM
        body = load_json(body)
    if not isinstance(body, dict) or V1_INSTANCES not in body:
        return body, PLATFORM
    instances = body[V1_INSTANCES]
    if not isinstance(instances, list) or len(instances) != 1:
        got = f"{len(instances)} instances" if isinstance(instances, list) else type(instances).__name__
        raise BadRequest(f"{V1_USAGE} (got {got}; send one request per clip)")
    return instances[0], V1


def prediction(content_b64: str, elapsed_s: float) -> dict:
    """One v1 prediction: the base64 4x video and the worker's seconds (rounded like the envelope's)."""
    return {"content": content_b64, V1_ELAPSED: round(elapsed_s, 4)}


def reply(protocol: str, content_b64: str, elapsed_s: float) -> str | dict:
    """The answer to a request that came as ``protocol``: the one reply function of each protocol."""
    if protocol == PLATFORM:
        return content_b64
    if protocol == V1_INSTANCE:
        return prediction(content_b64, elapsed_s)
    if protocol == V1:
        return {V1_PREDICTIONS: [prediction(content_b64, elapsed_s)]}
    raise ValueError(f"unknown protocol {protocol!r}; one of {PROTOCOLS}")


def request(body: bytes) -> bytes:
    """A platform body (a validated JSON object, as bytes) wrapped as a v1 request without re-encoding it."""
    return b'{"' + V1_INSTANCES.encode() + b'": [' + body + b"]}"


def read_reply(body: bytes) -> tuple[bytes, float | None]:
    """``{"predictions": [{"content": "<base64>", "elapsed_time": s}]}`` -> (base64 bytes, seconds); ValueError
    when the answer has no such prediction. Blocking (parses up to hundreds of MB): run it in a thread."""
    d = json.loads(body)
    try:
        pred = d[V1_PREDICTIONS][0]
        content = pred["content"]
    except (KeyError, IndexError, TypeError):
        raise ValueError(f"no {V1_PREDICTIONS}[0].content in the answer (keys {sorted(d)[:5]})") from None
    if not isinstance(content, str):
        raise ValueError(f"{V1_PREDICTIONS}[0].content is a {type(content).__name__}, not base64 text")
    elapsed = pred.get(V1_ELAPSED)
    return content.encode("ascii"), float(elapsed) if isinstance(elapsed, (int, float)) else None


def error_message(body: bytes) -> str:
    """The message of an error from a v1 server: TorchServe's ``{"message"}`` (passed on by KServe's model
    server, sometimes nested as JSON text), KServe's ``{"error"}``, FastAPI's ``{"detail"}``, or the start of
    a plain-text body."""
    try:
        d = json.loads(body)
    except (ValueError, AttributeError):
        d = None
    if isinstance(d, dict):
        for key in ("message", "error", "detail"):
            inner = d.get(key)
            if not inner:
                continue
            if isinstance(inner, (str, bytes)):  # the wrapper may nest the server's JSON error as text
                text = inner.decode(errors="replace") if isinstance(inner, bytes) else inner
                if text.lstrip().startswith("{"):
                    return error_message(text.encode())
                return text.strip()
            return str(inner).strip()
    return body[:300].decode(errors="replace").strip()
