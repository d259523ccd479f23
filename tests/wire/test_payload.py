"""handler/payload.py: the request body and its base64 ``content`` in every form clients send."""

from __future__ import annotations

import base64
import json

import pytest

from wire.errors import BadRequest
from wire.payload import decode_content, parse_body

VIDEO = b"\x00\x01\x02binary video bytes\xff" * 5


@pytest.mark.parametrize(
    "text",
    [
        base64.b64encode(VIDEO).decode(),
        str(base64.b64encode(VIDEO)),  # the platform example's b'...' form
        str(base64.encodebytes(VIDEO)),  # b'...' with escaped newlines
        base64.encodebytes(VIDEO).decode(),  # MIME line breaks
        "data:video/avi;base64," + base64.b64encode(VIDEO).decode(),
        base64.urlsafe_b64encode(VIDEO).decode().rstrip("="),  # URL-safe, no padding
    ],
)
def test_decode_content_accepts_common_forms(text):
    assert decode_content(text) == VIDEO


@pytest.mark.parametrize("text,words", [("", "empty"), ("abc$def", "'$' at position 3"), ("A", "cannot be base64")])
def test_decode_content_rejects_with_reason(text, words):
    with pytest.raises(BadRequest) as ei:
        decode_content(text)
    assert words in str(ei.value)


@pytest.mark.parametrize(
    "body,words",
    [
        (b"not json {", "raw"),  # raw bytes that are not JSON are taken as a video file (direct curl -T)
        (b'{"content": ', "not valid JSON"),
        ("[1, 2]", "JSON object"),
        ({"video": "AAAA"}, 'missing "content"'),
        ({"content": 123}, "must be a base64 string, got int"),
        ({"content": None}, "must be a base64 string"),
        ({"content": "AAAA", "format": "gif"}, '"format" must be one of'),
    ],
)
def test_parse_body_errors(body, words):
    if words == "raw":
        assert parse_body(body).video == body
        return
    with pytest.raises(BadRequest, match=words):
        parse_body(body)


def test_parse_body_dict_str_and_bytes_agree():
    d = {"content": base64.b64encode(VIDEO).decode(), "format": "MKV"}
    for body in (d, json.dumps(d), json.dumps(d).encode()):
        req = parse_body(body)
        assert req.video == VIDEO and req.out_format == "mkv"


@pytest.mark.parametrize(
    "value, expected", [(None, None), ("", None), ("auto", None), ("Clean", "clean"), ("compressed", "compressed")]
)
def test_input_quality_field(value, expected):
    body = {"content": base64.b64encode(b"\x00\x01video").decode(), "input_quality": value}
    assert parse_body(body).input_quality == expected


@pytest.mark.parametrize("value", ["best", 1, ["clean"]])
def test_bad_input_quality_lists_the_values(value):
    body = {"content": base64.b64encode(b"\x00\x01video").decode(), "input_quality": value}
    with pytest.raises(BadRequest, match=r"input_quality.*\['auto', 'clean', 'compressed'\]"):
        parse_body(body)


@pytest.mark.parametrize("value, expected", [(None, None), (0, 0), (23, 23), (51, 51), (30.0, 30)])
def test_crf_field(value, expected):
    body = {"content": base64.b64encode(b"\x00\x01video").decode(), "crf": value}
    assert parse_body(body).crf == expected


@pytest.mark.parametrize("value", [-1, 52, 22.5, "23", True])
def test_bad_crf_says_the_range(value):
    body = {"content": base64.b64encode(b"\x00\x01video").decode(), "crf": value}
    with pytest.raises(BadRequest, match=r'"crf" must be a whole number from 0 .* to 51'):
        parse_body(body)


@pytest.mark.parametrize(
    "value, ok", [("FRVSR_GAN_default", True), ("teacher-1.0", True), ("../etc", False), (3, False)]
)
def test_model_field(value, ok):
    body = {"content": base64.b64encode(b"\x00\x01video").decode(), "model": value}
    if ok:
        assert parse_body(body).model == value
    else:
        with pytest.raises(BadRequest, match="GET /autotable/models"):
            parse_body(body)
