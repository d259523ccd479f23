"""serving/contract.py: the wire contract both sides import (timing header, envelope, size arithmetic)."""

from __future__ import annotations

import base64
import json

import pytest

from serving.torchserve import read_properties
from testing.helpers import ROOT
from video.pipeline import Timings
from wire.contract import (
    b64_decoded_len,
    b64_len,
    error_body,
    format_timing,
    max_video_bytes,
    parse_timing,
    request_limit_bytes,
    response_limit_bytes,
    success_body,
)
from wire.limits import Limits


def test_timing_header_round_trips_and_tolerates_junk():
    t = Timings(open=0.0012, decode=0.1, model=4.25, encode=1.5, total=5.0, frames=150)
    text = t.header()
    assert text == "open=0.001;decode=0.100;model=4.250;encode=1.500;total=5.000;frames=150"
    assert parse_timing(text) == {
        "open": 0.001,
        "decode": 0.1,
        "model": 4.25,
        "encode": 1.5,
        "total": 5.0,
        "frames": 150,
    }
    assert parse_timing(format_timing({"total": 2.0})) == {"total": 2.0}
    assert parse_timing("total=abc;frames=3;garbage;=1") == {"frames": 3.0}
    assert parse_timing(None) == {} and parse_timing("") == {}


@pytest.mark.parametrize("n", [0, 1, 2, 3, 4, 5, 6, 1000, 1001, 1002])
def test_base64_sizes_match_the_encoder(n):
    text = base64.b64encode(b"x" * n)
    assert b64_len(n) == len(text)
    assert n <= b64_decoded_len(len(text)) <= n + 2


def test_envelope_bodies_are_the_documented_json():
    ok = json.loads(success_body(b"QUJD", 1.23456))
    assert ok == {"code": 200, "data": {"content": "QUJD", "elapsed_time": 1.2346}, "msg": "ok"}
    err = json.loads(error_body(422, 'over the "limit"'))
    assert err == {"code": 422, "data": None, "msg": 'over the "limit"'}


def test_limits_map_to_the_byte_sizes_torchserve_is_configured_with():
    lim = Limits()
    assert lim.max_input_bytes() == max_video_bytes(40_000, 300) == 40_000 * 3 * 300 + 2**20
    assert request_limit_bytes(lim) == b64_len(lim.max_input_bytes()) + 64 * 1024 == 49_463_640
    props = read_properties(ROOT / "config.properties")
    assert (
        request_limit_bytes(lim) <= int(props["max_request_size"]) < request_limit_bytes(lim) + 4 * 2**20
    )  # rounded up to 50 MiB
    assert response_limit_bytes(lim) <= int(props["max_response_size"]) < response_limit_bytes(lim) + 2**20
    bigger = Limits(max_pixels=80_000, max_frames=600)
    assert request_limit_bytes(bigger) > 3.9 * request_limit_bytes(lim)
