"""Awkward and malformed inputs end to end: each gets a clean JSON 4xx (or, for odd but valid videos, a
correct 4x result), and the service stays healthy afterwards.

Only cases test_serving.py does not already cover (it has: body not JSON, missing / non-string / non-base64
``content``, plain text, over max_pixels, over max_seconds, oversized Content-Length, wrong method).
Reuses test_serving's ``Service``; TorchServe starts once for this module (tiny model).
"""

from __future__ import annotations

import base64
import io
import subprocess
from fractions import Fraction

import av
import cv2
import numpy as np
import pytest
import requests
from clips import make_video, probe
from conftest import moving_clip
from test_serving import Service, b64, predict

from model.frvsr import FRVSR, FRVSRConfig, save_checkpoint

pytestmark = pytest.mark.skipif(subprocess.run(["java", "-version"], capture_output=True).returncode != 0, reason="TorchServe needs Java")


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bad_input")
    save_checkpoint(tmp / "tiny.pth", FRVSR(FRVSRConfig(channels=8, blocks=1, fnet_channels=4)))
    svc = Service(tmp).start()
    yield svc
    svc.stop()


@pytest.fixture
def healthy_after(service):
    """The service answers GET /health 200 after the test's request."""
    yield service
    r = requests.get(service.url + "/health", timeout=30)
    assert r.status_code == 200, r.text[:300]


# ----------------------------------------------------------------------------- input makers

def encode(muxer: str, codec: str, pix_fmt: str, frames: int = 4, width: int = 32, height: int = 24, fps: int = 10,
           src_format: str = "rgb24") -> bytes:
    """A moving texture encoded with any muxer/codec/pixel format PyAV has (``frames=0``: header only)."""
    clip = moving_clip(max(frames, 1), height, width)
    buf = io.BytesIO()
    with av.open(buf, "w", format=muxer) as c:
        v = c.add_stream(codec, rate=fps)
        v.width, v.height, v.pix_fmt = width, height, pix_fmt
        for i in range(frames):
            img = clip[i] if src_format == "rgb24" else cv2.cvtColor(clip[i], cv2.COLOR_RGB2GRAY)
            frame = av.VideoFrame.from_ndarray(img, format=src_format)
            frame.pts, frame.time_base = i, Fraction(1, fps)
            c.mux(v.encode(frame))
        c.mux(v.encode(None))
    return buf.getvalue()


def audio_only(muxer: str, codec: str) -> bytes:
    """One second of a tone in ``muxer``: a readable container without any video stream."""
    rate, n = 48000, 1024
    buf = io.BytesIO()
    with av.open(buf, "w", format=muxer) as c:
        a = c.add_stream(codec, rate=rate)
        a.layout = "mono"
        fmt = a.codec_context.format.name
        x = 0.2 * np.sin(2 * np.pi * 440 * np.arange(rate) / rate)
        data = x.astype(np.float32)[None] if fmt.startswith("flt") else (x * 32767).astype(np.int16 if fmt.startswith("s16") else np.int32)[None]
        for t in range(0, rate, n):
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(data[:, t : t + n]), format=fmt, layout="mono")
            frame.sample_rate, frame.pts = rate, t
            c.mux(a.encode(frame))
        c.mux(a.encode(None))
    return buf.getvalue()


def zero_frames() -> bytes:
    """An AVI with a 32x24 MJPEG video stream header and no frames at all."""
    buf = io.BytesIO()
    c = av.open(buf, "w", format="avi")
    v = c.add_stream("mjpeg", rate=10)
    v.width, v.height, v.pix_fmt = 32, 24, "yuvj420p"
    c.start_encoding()
    c.close()
    return buf.getvalue()


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
        ("over_max_frames", {"content": b64(encode("matroska", "ffv1", "yuv420p", frames=301, width=16, height=16, fps=100))}, 422, "max_frames"),
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
        ("gray8", lambda: encode("matroska", "ffv1", "gray", src_format="gray"), (128, 96)),
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
