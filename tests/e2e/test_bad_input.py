"""Awkward and malformed inputs end to end: each gets a clean JSON 4xx (or, for odd but valid videos, a
correct 4x result), and the service stays healthy afterwards.

Only cases test_serving.py does not already cover (it has: body not JSON, missing / non-string / non-base64
``content``, plain text, over max_pixels, over max_seconds, oversized Content-Length, wrong method).
TorchServe starts once for this module (tiny model, ``testing.launcher.ServiceProcess``).
"""

from __future__ import annotations

import base64

import cv2
import pytest
import requests

from testing.clips import audio_only, encode_video, make_video, moving_clip, probe
from testing.services import b64, needs_java, predict, tiny_service
from wire.contract import HEALTH_PATH

pytestmark = [pytest.mark.slow, needs_java]


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    svc = tiny_service(tmp_path_factory.mktemp("bad_input"))
    yield svc
    svc.stop()


@pytest.fixture
def healthy_after(service):
    """The service answers GET /health 200 after the test's request."""
    yield service
    r = requests.get(service.url + HEALTH_PATH, timeout=30)
    assert r.status_code == 200, r.text[:300]


# ----------------------------------------------------------------------------- input makers


def encode(
    muxer: str,
    codec: str,
    pix_fmt: str,
    frames: int = 4,
    width: int = 32,
    height: int = 24,
    fps: int = 10,
    gray: bool = False,
) -> bytes:
    """A moving texture in any muxer/codec/pixel format PyAV has (``frames=0``: the stream header only)."""
    clip = moving_clip(frames, height, width)
    if gray:
        clip = clip.mean(axis=-1).astype("uint8")
    return encode_video(clip, fps=fps, muxer=muxer, codec=codec, pix_fmt=pix_fmt)


def zero_frames() -> bytes:
    """An AVI with a 32x24 MJPEG video stream header and no frames at all."""
    return encode("avi", "mjpeg", "yuvj420p", frames=0)


def cut(data: bytes, fraction: float) -> bytes:
    """The first ``fraction`` of a file: an upload cut off mid-way."""
    return data[: int(len(data) * fraction)]


def png() -> bytes:
    ok, data = cv2.imencode(".png", moving_clip(1, 24, 32)[0])
    assert ok
    return data.tobytes()


def envelope(r: requests.Response, status: int) -> dict:
    assert r.headers["Content-Type"].startswith("application/json"), r.headers
    body = r.json()
    assert r.status_code == status and body["code"] == status, (r.status_code, body.get("msg"))
    assert set(body) == {"code", "data", "msg"} and isinstance(body["msg"], str) and body["msg"]
    if status != 200:
        assert body["data"] is None
    return body


# ----------------------------------------------------------------------------- refused


@pytest.mark.parametrize(
    "name,payload,status,words",
    [
        ("json_array", [{"content": "AAAA"}], 400, "JSON object"),
        ("json_number", 42, 400, "JSON object"),
        ("json_string", "AAAA", 400, "must be a JSON object like"),
        ("empty_content", {"content": ""}, 400, "empty"),
        ("unknown_format", {"content": b64(make_video(frames=2)), "format": "gif"}, 400, "format"),
        pytest.param("png_image", {"content": b64(png())}, 415, "video"),
        ("wav_audio_only", {"content": b64(audio_only("wav", "pcm_s16le"))}, 415, "not a video"),
        ("mkv_audio_only", {"content": b64(audio_only("matroska", "flac"))}, 422, "no video stream"),
        ("mp4_audio_only", {"content": b64(audio_only("mp4", "aac"))}, 422, "no video stream"),
        ("zero_frames", {"content": b64(zero_frames())}, 422, "no decodable frames"),
        ("mp4_header_only", {"content": b64(make_video("mp4_h264", frames=12)[:1500])}, 415, "not a video"),
        ("mp4_truncated", {"content": b64(cut(make_video("mp4_h264", frames=12), 0.9))}, 422, "truncated"),
        ("avi_truncated", {"content": b64(cut(make_video("avi_mjpeg", frames=12), 0.9))}, 422, "corrupt"),
        (
            "over_max_frames",
            {"content": b64(encode("matroska", "ffv1", "yuv420p", frames=301, width=16, height=16, fps=100))},
            422,
            "max_frames",
        ),
    ],
)
def test_bad_input_gets_a_clean_json_4xx(healthy_after, name, payload, status, words):
    r = predict(healthy_after, json=payload)
    body = envelope(r, status)
    assert words.lower() in body["msg"].lower(), body["msg"]


# ----------------------------------------------------------------------------- odd but valid


@pytest.mark.parametrize(
    "name,video,size",
    [
        ("odd_37x53", lambda: encode("matroska", "ffv1", "yuv420p", width=37, height=53), (148, 212)),
        ("gray8", lambda: encode("matroska", "ffv1", "gray", gray=True), (128, 96)),
        ("yuv420p10le", lambda: encode("matroska", "ffv1", "yuv420p10le"), (128, 96)),
    ],
)
def test_odd_but_valid_video_is_upscaled(healthy_after, name, video, size):
    data = video()
    src = probe(data)
    r = predict(healthy_after, json={"content": b64(data)})
    envelope(r, 200)
    dst = probe(base64.b64decode(r.json()["data"]["content"]))
    assert (dst["width"], dst["height"]) == size and (src["width"] * 4, src["height"] * 4) == size
    assert dst["frames"] == src["frames"] == 4
