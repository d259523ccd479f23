"""The wire contract between clients, the proxy and the model server, in one place.

Routes, the platform's JSON envelope, the ``X-FRVSR-*`` header names, the per-stage timing header to and
from text, base64 size arithmetic, and the mapping from the request limits to the byte sizes the proxy
and TorchServe must accept. The handler (inside the .mar), the proxy, ``serving`` and ``bench/`` import
it; it depends on nothing but the standard library.

    success: 200 {"code": 200, "data": {"content": "<base64 4x video>", "elapsed_time": 1.2345}, "msg": "ok"}
    error:   <status> {"code": <status>, "data": null, "msg": "<what is wrong and what to do>"}

KServe's v1 protocol, spoken by the same handler: ``wire.v1``.
"""

from __future__ import annotations

import json
import math

# ----------------------------------------------------------------------------- routes (the proxy's port)

PREDICT_PATH = "/autotable/predict"  # POST: the one inference route, for every client and the web page
HEALTH_PATH = "/health"  # GET: 200 when a model worker is ready, else 503; queue depth and limits
QUEUE_PATH = "/autotable/queue"  # GET ?request=<id>: a waiting request's place in the queue (the page polls it)
MODELS_PATH = "/autotable/models"  # GET: the served models, their queues and measured seconds per frame
PAGE_PATH = "/"  # GET: the web page
STATIC_PATH = "/static"  # GET /static/<file>: the page's JavaScript and CSS

# ----------------------------------------------------------------------------- headers

HEADER_PREFIX = "X-FRVSR-"  # response headers the proxy passes through from the model server
TIMING_HEADER = (
    "X-FRVSR-Timing"  # per-stage seconds inside the worker: open=..;decode=..;model=..;encode=..;total=..;frames=N
)
FORMAT_HEADER = "X-FRVSR-Format"  # container family of the answer: avi, mp4, mkv, webm
MODEL_HEADER = "X-FRVSR-Model"  # <model name>/<version> that served the request
# the model variant that served it and why: "compressed (auto: h264, 0.311 bpp)", "clean (requested)"
INPUT_HEADER = "X-FRVSR-Input"
REQUEST_ID_HEADER = "X-FRVSR-Request-Id"  # optional, chosen by the client: lets it ask QUEUE_PATH for its place
TIMING_FIELDS = ("open", "decode", "model", "encode", "total", "frames")

# ----------------------------------------------------------------------------- envelope


def error_body(status: int, msg: str) -> bytes:
    """An error in the envelope: ``{"code": status, "data": null, "msg": msg}``."""
    return json.dumps({"code": status, "data": None, "msg": msg}).encode()


def success_body(content_b64: bytes, elapsed_s: float) -> bytes:
    """200 with the base64 video; built as bytes (the content can be hundreds of MB and never needs escaping)."""
    return (
        b'{"code": 200, "data": {"content": "'
        + content_b64
        + b'", "elapsed_time": '
        + f"{elapsed_s:.4f}".encode()
        + b'}, "msg": "ok"}'
    )


# ----------------------------------------------------------------------------- timing header


def format_timing(timings: dict[str, float]) -> str:
    """``{"decode": 0.12, ..., "frames": 150}`` -> ``decode=0.120;...;frames=150`` (seconds to the millisecond)."""
    return ";".join(f"{k}={int(v)}" if k == "frames" else f"{k}={v:.3f}" for k, v in timings.items())


def parse_timing(text: str | None) -> dict[str, float]:
    """The inverse of :func:`format_timing`; malformed parts are skipped (the header is informational)."""
    out: dict[str, float] = {}
    for part in (text or "").split(";"):
        key, sep, value = part.partition("=")
        if not sep or not key.strip():
            continue
        try:
            out[key.strip()] = float(value)
        except ValueError:
            continue
    return out


# ----------------------------------------------------------------------------- sizes

JSON_SLACK_BYTES = 64 * 1024  # the JSON around the base64 content (keys, format, whitespace)
RESPONSE_SLACK_BYTES = 4 * 2**20  # TorchServe's own framing and headers around the answer
CONTAINER_SLACK_BYTES = 2**20  # container headers and an audio track on top of the raw frames


def b64_len(n_bytes: int) -> int:
    """Length of the base64 text of ``n_bytes`` bytes (with padding)."""
    return 4 * math.ceil(n_bytes / 3)


def b64_decoded_len(n_chars: int) -> int:
    """Bytes encoded by ``n_chars`` characters of padded base64 (an upper bound by at most 2)."""
    return n_chars // 4 * 3


def max_video_bytes(max_pixels: int, max_frames: int) -> int:
    """The largest accepted video file: uncompressed 8-bit RGB at the limits, + headers and audio.
    Compressed clips are far smaller; raw RGB is the worst case a client may legitimately send."""
    return max_pixels * 3 * max_frames + CONTAINER_SLACK_BYTES


def request_limit_bytes(limits) -> int:
    """The proxy's body limit and TorchServe's ``max_request_size``: the largest video, base64, + JSON."""
    return b64_len(max_video_bytes(limits.max_pixels, limits.max_frames)) + JSON_SLACK_BYTES


def response_limit_bytes(limits) -> int:
    """TorchServe's ``max_response_size``: the largest accepted 4x video (``max_output_bytes``), base64, + slack."""
    return b64_len(limits.max_output_bytes) + RESPONSE_SLACK_BYTES
