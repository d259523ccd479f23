"""The same pipeline on KServe's own model server (``python -m serving.kserve_model``), started as a process on
a free port: v1 and v2 requests with a real clip, bad bodies, the proxy in front of it, a clean stop."""

from __future__ import annotations

import base64
import json
import signal
import subprocess
import sys
import time

import pytest
import requests

from common.paths import ROOT
from serving.torchserve import free_port
from testing.clips import encode_video, moving_clip, probe
from testing.launcher import wait_healthy
from testing.services import b64, tiny_checkpoint
from wire.contract import PREDICT_PATH, TIMING_HEADER

pytestmark = pytest.mark.slow
MODEL = "tiny"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("kserve_native")
    tiny_checkpoint(tmp)
    port = free_port()
    args = ["--http_port", str(port), "--model_path", str(tmp), "--used_model", "tiny.pth", "--model_name", MODEL]
    log = open(tmp / "server.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "serving.kserve_model", *args], cwd=ROOT, stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if requests.get(f"{url}/v2/models/{MODEL}/ready", timeout=2).status_code == 200:
                break
        except requests.RequestException:
            time.sleep(0.3)
    else:
        proc.kill()
        pytest.fail(f"the KServe model server did not get ready: {(tmp / 'server.log').read_text()[-2000:]}")
    yield url, proc
    if proc.poll() is None:
        proc.kill()
    log.close()


CLIP = encode_video(moving_clip(10, 32, 48), "mp4_h264", fps=10)


def test_v1_predict_returns_the_4x_video(server):
    url, _ = server
    r = requests.post(f"{url}/v1/models/{MODEL}:predict", json={"instances": [{"content": b64(CLIP)}]}, timeout=120)
    assert r.status_code == 200, r.text[:300]
    (pred,) = r.json()["predictions"]
    info = probe(base64.b64decode(pred["content"]))
    assert (info["width"], info["height"], info["frames"]) == (192, 128, 10) and pred["elapsed_time"] > 0
    assert "frames=10" in r.headers[TIMING_HEADER]


@pytest.mark.parametrize("binary", [False, True])
def test_v2_infer_returns_the_4x_video(server, binary):
    url, _ = server
    body = {
        "inputs": [{"name": "video", "shape": [1], "datatype": "BYTES", "data": [b64(CLIP)]}],
        "parameters": {"format": "mkv", "crf": 20, **({"binary_data_output": True} if binary else {})},
    }
    r = requests.post(f"{url}/v2/models/{MODEL}/infer", json=body, timeout=120)
    assert r.status_code == 200, r.text[:300]
    if binary:  # the binary tensor extension: JSON header, then the BYTES element (4-byte length, the file)
        n = int(r.headers["inference-header-content-length"])
        head, raw = json.loads(r.content[:n]), r.content[n:]
        size = int.from_bytes(raw[:4], "little")
        video = raw[4 : 4 + size]
        assert head["outputs"][0]["parameters"]["binary_data_size"] == len(raw) and size == len(raw) - 4
    else:
        head = r.json()
        video = base64.b64decode(head["outputs"][0]["data"][0])
    assert head["parameters"]["format"] == "mkv"
    info = probe(video)
    assert info["format"] == "matroska,webm" and (info["width"], info["height"], info["frames"]) == (192, 128, 10)


@pytest.mark.parametrize(
    "route, body, status, words",
    [
        ("v1", {"instances": [{"content": b64(b"plain text, not a video " * 20)}]}, 415, "not a video"),
        ("v1", {"instances": [{"content": b64(CLIP), "crf": 99}]}, 400, '"crf" must be'),
        ("v1", {"content": b64(CLIP)}, 400, '{"instances": [{"content"'),
        ("v2", {"inputs": [{"name": "video", "shape": [1], "datatype": "INT32", "data": [1]}]}, 400, "BYTES input"),
        ("v2", {"inputs": [{"name": "video", "shape": [1], "datatype": "BYTES", "data": ["@@@"]}]}, 400, "base64"),
    ],
)
def test_bad_bodies_get_a_clean_4xx_and_the_server_stays_up(server, route, body, status, words):
    url, _ = server
    path = f"/v1/models/{MODEL}:predict" if route == "v1" else f"/v2/models/{MODEL}/infer"
    r = requests.post(url + path, json=body, timeout=60)
    assert r.status_code == status and words in r.json()["detail"], r.text[:300]
    assert requests.get(f"{url}/v2/models/{MODEL}/ready", timeout=10).status_code == 200


def test_the_proxy_in_front_of_it_unchanged(server, tmp_path):
    url, _ = server
    port = free_port()
    cmd = [sys.executable, "client_infer.py", "--kserve_url", f"{url}/v1/models/{MODEL}", "--service_port", str(port)]
    proxy = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert wait_healthy(f"http://127.0.0.1:{port}", 60, proxy)
        r = requests.post(f"http://127.0.0.1:{port}{PREDICT_PATH}", json={"content": b64(CLIP)}, timeout=120)
        assert r.status_code == 200 and r.json()["code"] == 200, r.text[:300]
        info = probe(base64.b64decode(r.json()["data"]["content"]))
        assert (info["width"], info["height"], info["frames"]) == (192, 128, 10)
    finally:
        proxy.send_signal(signal.SIGTERM)
        proxy.wait(30)


def test_sigterm_stops_it_cleanly(server):
    _, proc = server
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(60) == 0
