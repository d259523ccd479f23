"""The request body: ``{"content": "<base64 video>", "format": "mp4", "input_quality": "auto"}`` -> video
bytes, output format and which of the model's variants to use (``model.variants``).

The same body may arrive wrapped in KServe's v1 protocol, ``{"instances": [<body>]}`` (``wire.v1.unwrap``).

The one parser of a body: the proxy runs it before a request waits for a worker, and the video pipeline
runs it in the model server (which may be handed a dict, a JSON string or raw bytes). Besides plain
base64 it accepts what clients commonly send by accident: the Python bytes literal ``b'...'``
(``str(base64.b64encode(data))``, as in the platform's example), MIME line breaks, a ``data:...;base64,``
prefix, URL-safe alphabet, missing padding.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass

from wire.errors import BadRequest

OUTPUT_FORMATS = ("mp4", "avi", "mkv", "webm")
# ``input_quality``: auto (the default: chosen from the input's codec and bits per pixel), or the model
# trained for clean low-res input, or its fine-tune for compressed (H.264, JPEG, noisy) input
INPUT_QUALITIES = ("auto", "clean", "compressed")
# ``crf``: the output's quality on H.264's scale, 0 (best, largest) to 51; WebM's VP9 maps it onto its own
# 0-63 (``video.settings.EncoderSettings.with_crf``). Omitted: the server's setting (18)
CRF_RANGE = (0, 51)
# ``model``: a registered model's name (TorchServe's rules: letters, digits, _ - .)
_MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")

_NOT_B64 = re.compile(r"[^A-Za-z0-9+/=]")
_WHITESPACE = re.compile(r"\s+")


@dataclass(frozen=True)
class VideoRequest:
    video: bytes
    out_format: str | None  # one of OUTPUT_FORMATS, or None: the input's container family
    input_quality: str | None = None  # "clean" or "compressed"; None: automatic
    crf: int | None = None  # the output's quality (CRF_RANGE); None: the server's setting
    model: str | None = None  # the model asked for (the proxy routes it); None: the default


def parse_body(body: object, allow_raw: bool = True) -> VideoRequest:
    """Validate a request body and decode its video.

    Args:
        body: a dict (JSON already parsed), a JSON document as str/bytes, or raw video bytes (a direct
            ``curl -T clip.mp4`` to TorchServe).
        allow_raw: accept raw video bytes; the public route (the proxy) takes JSON only.
    Raises:
        BadRequest: not a JSON object, ``content`` missing/not a string/empty/not base64, bad ``format``.
    """
    if allow_raw and isinstance(body, (bytes, bytearray)):
        head = bytes(body[:64]).lstrip()
        if not head.startswith(b"{"):
            if not body:
                raise BadRequest('empty request body; send JSON {"content": "<base64 video>"}')
            return VideoRequest(bytes(body), None)  # raw video bytes
    body = load_json(body)
    if not isinstance(body, dict):
        raise BadRequest(
            f'request body must be a JSON object like {{"content": "<base64 video>"}}, got {type(body).__name__}'
        )
    if "content" not in body:
        raise BadRequest(f'missing "content": send {{"content": "<base64 video>"}} (got keys {sorted(body)[:10]})')
    content = body["content"]
    if not isinstance(content, str):
        raise BadRequest(f'"content" must be a base64 string, got {type(content).__name__}')
    return request_from(decode_content(content), body)


def request_from(video: bytes, fields: dict) -> VideoRequest:
    """A request from its video and its option fields (``format``, ``input_quality``, ``crf``, ``model``):
    the body's, or those of a protocol that carries them apart (KServe v2: the request's parameters)."""
    return VideoRequest(
        video,
        parse_format(fields.get("format")),
        parse_input_quality(fields.get("input_quality")),
        parse_crf(fields.get("crf")),
        parse_model(fields.get("model")),
    )


def load_json(body: object) -> object:
    """A JSON document given as str/bytes -> its value; anything else is returned as it is (already parsed).

    Raises:
        BadRequest: not valid JSON (or not UTF-8).
    """
    if not isinstance(body, (str, bytes, bytearray)):
        return body
    try:
        return json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BadRequest(f'request body is not valid JSON ({e}); send {{"content": "<base64 video>"}}') from None


def parse_format(value: object) -> str | None:
    """``None`` (same container family as the input) or one of OUTPUT_FORMATS, case-insensitive."""
    if value is None or value == "":
        return None
    if not isinstance(value, str) or value.lower().lstrip(".") not in OUTPUT_FORMATS:
        raise BadRequest(
            f'"format" must be one of {list(OUTPUT_FORMATS)} or omitted (same as the input), got {value!r}'
        )
    return value.lower().lstrip(".")


def parse_input_quality(value: object) -> str | None:
    """``None`` (automatic) for a missing, empty or ``auto`` value, else ``clean`` or ``compressed``."""
    if value is None or value == "":
        return None
    if not isinstance(value, str) or value.lower() not in INPUT_QUALITIES:
        raise BadRequest(f'"input_quality" must be one of {list(INPUT_QUALITIES)} or omitted (auto), got {value!r}')
    return None if value.lower() == "auto" else value.lower()


def parse_crf(value: object) -> int | None:
    """``None`` (the server's setting) or a whole number in ``CRF_RANGE``."""
    if value is None or value == "":
        return None
    lo, hi = CRF_RANGE
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value) or not lo <= value <= hi:
        raise BadRequest(
            f'"crf" must be a whole number from {lo} (best quality, largest file) to {hi} (smallest) on H.264\'s '
            f"scale, or omitted (the server's setting), got {value!r}"
        )
    return int(value)


def parse_model(value: object) -> str | None:
    """``None`` (the default model) or a model name as TorchServe and KServe spell them."""
    if value is None or value == "":
        return None
    if not isinstance(value, str) or not _MODEL_NAME.match(value):
        raise BadRequest(f'"model" must be the name of a served model (see GET /autotable/models), got {value!r}')
    return value


def decode_content(text: str) -> bytes:
    """Base64 text -> bytes; tolerant of the wrappers listed in the module docstring.

    Raises:
        BadRequest: empty, or not base64 (the message names the first offending character).
    """
    try:  # fast path: canonical base64, decoded at C speed with no copies of the text
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        data = _decode_lenient(text)
    if not data:
        raise BadRequest('"content" is empty; put the base64 of a video file in it')
    return data


def _decode_lenient(text: str) -> bytes:
    s = text.strip()
    if len(s) >= 3 and s[0] in "bB" and s[1] in "'\"" and s[-1] == s[1]:
        # str(bytes) of base64.encodebytes() shows its newlines as the two characters '\' 'n'
        s = s[2:-1].replace("\\n", "").replace("\\r", "")
    if s.startswith("data:") and "," in s[:200]:
        s = s.split(",", 1)[1]
    s = _WHITESPACE.sub("", s)
    if "-" in s or "_" in s:
        s = s.replace("-", "+").replace("_", "/")
    bad = _NOT_B64.search(s)
    if bad:
        raise BadRequest(
            f'"content" is not valid base64: character {bad.group()!r} at position {bad.start()}; '
            "send base64.b64encode(video_bytes).decode('ascii')"
        )
    s = s.rstrip("=")
    if len(s) % 4 == 1:
        raise BadRequest(f'"content" is not valid base64: {len(s)} characters cannot be base64 (truncated upload?)')
    try:
        return base64.b64decode(s + "=" * (-len(s) % 4), validate=True)
    except (binascii.Error, ValueError) as e:
        raise BadRequest(
            f'"content" is not valid base64 ({e}); send base64.b64encode(video_bytes).decode("ascii")'
        ) from None
