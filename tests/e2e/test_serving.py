"""End to end: client_infer.py really starts TorchServe and the proxy (on ports of its own), clients call
POST /autotable/predict, a second model version is registered through the management API, and the
shutdown leaves no process behind. TorchServe starts once for the module (tiny model, tiny clips)."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
import requests

from common.paths import ROOT
from model.frvsr import FRVSRConfig
from proxy.backend import TorchServeBackend
from serving.torchserve import TS_MAIN_CLASS, ServeState, group_alive
from testing.clips import make_video, probe
from testing.launcher import ServiceProcess
from testing.services import b64, needs_java, predict, tiny_checkpoint
from wire.contract import HEALTH_PATH, INPUT_HEADER, MODEL_HEADER, MODELS_PATH, PREDICT_PATH, TIMING_HEADER

pytestmark = [pytest.mark.slow, needs_java]


def ts_processes(run_dir: Path) -> list[psutil.Process]:
    """TorchServe JVMs and workers started from ``run_dir`` (JVM: config path in its command line)."""
    found = []
    for p in psutil.process_iter(["pid"]):
        try:
            cmd = " ".join(p.cmdline())
            cwd = p.cwd()
        except psutil.Error:
            continue
        if (TS_MAIN_CLASS in cmd and f"{run_dir}/" in cmd) or (
            "model_service_worker" in cmd and f"{cwd}/".startswith(f"{run_dir}/")
        ):
            found.append(p)
    return found


def service_for(tmp: Path, name: str) -> ServiceProcess:
    return ServiceProcess(tmp, "tiny.pth", tmp, name=name, extra=["--response_timeout", "120"])


@pytest.fixture(scope="module")
def tmp_models(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("serving")
    tiny_checkpoint(tmp)
    tiny_checkpoint(tmp, "tiny2.pth", FRVSRConfig(channels=4, blocks=1, fnet_channels=4, residual=False))
    return tmp


@pytest.fixture(scope="module")
def service(tmp_models):
    """The tiny model as the default, a second one served beside it (``--extra_model``) and the shipped GAN."""
    svc = service_for(tmp_models, "svc")
    svc.extra += ["--extra_model", f"other={tmp_models / 'tiny2.pth'}", "--extra_model", "gan"]
    svc.start()
    yield svc
    svc.stop()


# ----------------------------------------------------------------------------- happy paths


def test_avi_mjpeg_clip_is_upscaled_4x(service):
    video = make_video("avi_mjpeg", frames=30, width=96, height=64, fps=15)  # 2 s
    assert video[:4] == b"RIFF" and video[8:12] == b"AVI "
    r = predict(service, json={"content": b64(video)})
    assert r.status_code == 200, r.text[:500]
    body = r.json()
    assert set(body) == {"code", "data", "msg"} and body["code"] == 200 and body["msg"] == "ok"
    assert set(body["data"]) == {"content", "elapsed_time"}
    assert (
        isinstance(body["data"]["elapsed_time"], float)
        and round(body["data"]["elapsed_time"], 4) == body["data"]["elapsed_time"]
    )
    out = base64.b64decode(body["data"]["content"], validate=True)
    assert out[:4] == b"RIFF" and out[8:12] == b"AVI "
    src, dst = probe(video), probe(out)
    assert (dst["width"], dst["height"]) == (4 * src["width"], 4 * src["height"]) == (384, 256)
    assert dst["frames"] == src["frames"] == 30 and dst["fps"] == src["fps"] == 15
    assert dst["codec"] == "h264"
    timing = r.headers[TIMING_HEADER]
    assert "decode=" in timing and "model=" in timing and "encode=" in timing and "frames=30" in timing


def test_mp4_audio_track_is_kept(service):
    video = make_video("mp4_h264", frames=12, width=64, height=48, fps=12, audio=True)
    r = predict(service, json={"content": b64(video)})
    assert r.status_code == 200, r.text[:500]
    src, dst = probe(video), probe(base64.b64decode(r.json()["data"]["content"]))
    assert "mp4" in dst["format"] and dst["audio"] == ["aac"] and dst["audio_packets"] == src["audio_packets"]
    assert dst["frames"] == 12 and (dst["width"], dst["height"]) == (256, 192)
    assert dst["pts"] == src["pts"]  # MP4 keeps the input's clock


def test_python_bytes_literal_form_is_accepted(service):
    video = make_video("avi_mjpeg", frames=4, width=32, height=32)
    r = predict(service, json={"content": str(base64.b64encode(video))})  # "b'UklGR...'"
    assert r.status_code == 200, r.text[:500]
    assert not r.json()["data"]["content"].startswith("b'")
    assert probe(base64.b64decode(r.json()["data"]["content"]))["frames"] == 4


def test_health_reports_proxy_torchserve_and_model(service):
    r = requests.get(service.url + HEALTH_PATH, timeout=10)
    d = r.json()["data"]
    assert r.status_code == 200 and d["proxy"] == "ok" and d["torchserve"] == "Healthy"
    assert d["model"]["name"] == "tiny" and d["model"]["ready"] and d["model"]["workers"] == ["READY"]
    assert d["queue"]["waiting"] == 0 and d["queue"]["slots"] == 2 and d["queue"]["max_waiting"] == 32
    assert (
        d["limits"]["max_pixels"] == 40000
        and d["limits"]["max_seconds"] == 5.0
        and d["limits"]["max_body_bytes"] > 36e6
    )


def test_page_is_served_on_the_service_port(service):
    r = requests.get(service.url + "/", timeout=10)
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/html") and ">Upscale</button>" in r.text


# ----------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "kw,status,words",
    [
        ({"data": b"this is not json", "headers": {"Content-Type": "application/json"}}, 400, "not valid JSON"),
        ({"json": {"video": "AAAA"}}, 400, 'missing "content"'),
        ({"json": {"content": ["AAAA"]}}, 400, "must be a base64 string"),
        ({"json": {"content": "###"}}, 400, "not valid base64"),
        ({"json": {"content": b64(b"Dear user, this is plain text and not a video. " * 20)}}, 415, "not a video"),
        ({"json": {"content": b64(make_video("avi_mjpeg", frames=2, width=240, height=200))}}, 422, "max_pixels"),
        (
            {"json": {"content": b64(make_video("mkv_ffv1", frames=80, width=16, height=16, fps=10))}},
            422,
            "max_seconds",
        ),
    ],
)
def test_bad_requests_get_documented_status(service, kw, status, words):
    r = predict(service, **kw)
    body = r.json()
    assert r.status_code == status and body["code"] == status and body["data"] is None
    assert words in body["msg"], body["msg"]


def test_wrong_method_is_405(service):
    r = requests.get(service.url + "/autotable/predict", timeout=10)
    assert r.status_code == 405 and r.json()["code"] == 405


def test_oversized_content_length_is_refused_before_upload(service):
    port = service.ports["service_port"]
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(
            f"POST {PREDICT_PATH} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {2 * 10**9}\r\n\r\n".encode()
        )
        data = b""
        while b'"code"' not in data or not data.rstrip().endswith(b"}"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.split()[1] == b"413" and json.loads(body)["code"] == 413


# ----------------------------------------------------------------------------- request options, models


def test_a_lower_crf_gives_a_larger_file_closer_to_the_model_output(service):
    from testing.clips import decode_frames, encode_video, moving_clip
    from train.metrics import mse, psnr_from_mse

    video = encode_video(moving_clip(8, 48, 64, grain=8), "mp4_h264", fps=10)
    out = {}
    for crf in (4, 18, 40):
        r = predict(service, json={"content": b64(video), "crf": crf})
        assert r.status_code == 200, r.text[:300]
        out[crf] = base64.b64decode(r.json()["data"]["content"])
    frames = {crf: np.stack(decode_frames(data)) / 255.0 for crf, data in out.items()}
    assert len(out[4]) > len(out[18]) > len(out[40])
    # against the nearly lossless answer: quality falls with the CRF
    assert psnr_from_mse(mse(frames[18], frames[4])) > psnr_from_mse(mse(frames[40], frames[4])) + 3
    bad = predict(service, json={"content": b64(video), "crf": 60})
    assert bad.status_code == 400 and "0 (best quality, largest file) to 51" in bad.json()["msg"]


def test_the_extra_model_is_listed_and_served_by_name(service):
    listed = requests.get(service.url + MODELS_PATH, timeout=30).json()["data"]
    assert listed["default"] == "tiny" and [m["name"] for m in listed["models"]][:1] == ["tiny"]
    other = {m["name"]: m for m in listed["models"]}["other"]
    assert other["ready"] and other["workers"] == 1 and other["timeout_s"] > 0 and not other["default"]
    video = make_video("avi_mjpeg", frames=3, width=24, height=24)
    r = predict(service, json={"content": b64(video), "model": "other"})
    assert r.status_code == 200 and r.headers[MODEL_HEADER] == "other/1.0"
    assert probe(base64.b64decode(r.json()["data"]["content"]))["width"] == 96
    r = predict(service, json={"content": b64(video), "model": "missing"})
    assert r.status_code == 400 and "'other'" in r.json()["msg"] and "'tiny'" in r.json()["msg"]
    health = requests.get(service.url + HEALTH_PATH, timeout=30).json()["data"]
    assert {m["name"] for m in health["models"]} >= {"tiny", "other"}


def test_the_shipped_gan_is_served_as_gan_and_picks_its_model_per_upload_like_the_default(service):
    listed = {m["name"]: m for m in requests.get(service.url + MODELS_PATH, timeout=30).json()["data"]["models"]}
    assert listed["gan"]["ready"] and listed["gan"]["about"].startswith("sharp:")
    assert listed["tiny"]["about"] == "" and listed["other"]["about"] == ""  # not shipped files: nothing to say
    mp4 = make_video("mp4_h264", frames=4, width=64, height=48)  # a smooth synthetic clip: ~2.4 bpp, so "clean"
    auto = predict(service, json={"content": b64(mp4), "model": "gan"})
    assert auto.status_code == 200, auto.text[:300]
    assert auto.headers[MODEL_HEADER] == "gan/1.0" and auto.headers[INPUT_HEADER].startswith("clean (auto: h264")
    assert probe(base64.b64decode(auto.json()["data"]["content"]))["width"] == 256
    forced = predict(service, json={"content": b64(mp4), "model": "gan", "input_quality": "compressed"})
    assert forced.status_code == 200 and forced.headers[INPUT_HEADER] == "compressed (requested)"
    assert forced.json()["data"]["content"] != auto.json()["data"]["content"]  # two different models answered


# ----------------------------------------------------------------------------- model versions


def test_second_version_registered_and_made_default_is_served(service, tmp_models):
    video = make_video("avi_mjpeg", frames=3, width=24, height=24)
    r1 = predict(service, json={"content": b64(video), "input_quality": "clean"})
    assert r1.status_code == 200 and r1.headers[MODEL_HEADER] == "tiny/1.0"
    assert r1.headers[INPUT_HEADER] == "clean (requested)"  # the proxy passes the variant through

    built = subprocess.run(
        service.args(
            "--archive_only",
            "--model_name",
            "tiny",
            "--model_version",
            "2.0",
            "--used_model",
            "tiny2.pth",
            "--run_dir",
            str(tmp_models / "archive_v2"),
        ),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0, built.stdout + built.stderr
    assert (tmp_models / "store" / "tiny_v2.0.mar").is_file()

    assert (
        service.management("POST", "/models", url="tiny_v2.0.mar", initial_workers=1, synchronous="true").status_code
        == 200
    )
    versions = service.management("GET", "/models/tiny/all").json()
    assert sorted(v["modelVersion"] for v in versions) == ["1.0", "2.0"]
    assert service.management("PUT", "/models/tiny/2.0/set-default").status_code == 200
    r2 = predict(service, json={"content": b64(video)})
    assert r2.status_code == 200 and r2.headers[MODEL_HEADER] == "tiny/2.0"
    assert r2.json()["data"]["content"] != r1.json()["data"]["content"]

    # back to 1.0, then unregister 2.0: the route serves 1.0 again
    assert service.management("PUT", "/models/tiny/1.0/set-default").status_code == 200
    assert service.management("DELETE", "/models/tiny/2.0").status_code == 200
    r3 = predict(service, json={"content": b64(video)})
    assert r3.status_code == 200 and r3.headers[MODEL_HEADER] == "tiny/1.0"
    assert r3.json()["data"]["content"] == r1.json()["data"]["content"]


def test_management_requires_the_token(service):
    r = requests.get(service.mgmt + "/models", timeout=10)
    assert r.status_code in (400, 401) and "Token" in r.text


# ----------------------------------------------------------------------------- TorchServeBackend on the real TorchServe


def _backend_run(service: ServiceProcess, scenario, model: str = "tiny", **kw):
    async def main():
        backend = TorchServeBackend(
            model,
            f"http://127.0.0.1:{service.ports['inference_port']}",
            service.mgmt,
            service.run_dir / "key_file.json",
            **kw,
        )
        await backend.start()
        try:
            return await scenario(backend)
        finally:
            await backend.close()

    return asyncio.run(main())


def test_backend_renews_a_key_torchserve_rejected_and_logs_it(service, caplog):
    body = json.dumps({"content": b64(make_video(frames=3, width=24, height=24))}).encode()
    key_file = service.run_dir / "key_file.json"

    async def scenario(backend):
        assert (await backend.predict(body, 60)).status == 200
        stale = await backend.tokens.key("inference")
        # TorchServe issues a new inference key and rewrites key_file.json; the file's old mtime is put back so the
        # backend keeps its cached key, now invalid (a request racing the rewrite sees exactly this)
        st = key_file.stat()
        api = service.keys()["API"]
        r = await asyncio.to_thread(
            requests.post,
            service.mgmt + "/token",
            params={"type": "inference"},
            headers={"Authorization": f"Bearer {api}"},
            timeout=30,
        )
        assert r.status_code == 200 and service.keys()["inference"] != stale
        os.utime(key_file, ns=(st.st_atime_ns, st.st_mtime_ns))
        status, payload, headers = await backend.predict(body, 60)  # refused once, renewed, retried
        assert status == 200 and base64.b64decode(payload) and TIMING_HEADER in headers
        fresh = await backend.tokens.key("inference")
        assert fresh != stale and fresh == service.keys()["inference"]

    with caplog.at_level("INFO", logger="proxy.backend"):
        _backend_run(service, scenario)
    assert caplog.text.count("inference key renewed") == 1 and "failed" not in caplog.text
    assert (
        predict(service, json={"content": b64(make_video(frames=2))}).status_code == 200
    )  # the service's own proxy copes


def test_backend_renews_an_expiring_key_before_using_it(service):
    body = json.dumps({"content": b64(make_video(frames=2, width=16, height=16))}).encode()

    async def scenario(backend):
        first = await backend.tokens.key("inference")
        assert (await backend.predict(body, 60)).status == 200  # every key "expires" within the margin: renewed first
        assert await backend.tokens.key("inference") != first

    _backend_run(service, scenario, renew_margin_s=10**9)


def test_backend_raises_timeout_error_past_its_limit(service):
    body = json.dumps({"content": b64(make_video(frames=40, width=160, height=120))}).encode()

    async def scenario(backend):
        t = time.perf_counter()
        with pytest.raises(TimeoutError):
            await backend.predict(body, 0.2)
        assert time.perf_counter() - t < 2.0

    _backend_run(service, scenario)


def test_backend_maps_an_unregistered_model_to_503(service):
    async def scenario(backend):
        status, msg, _ = await backend.predict(json.dumps({"content": b64(make_video(frames=2))}).encode(), 60)
        assert status == 503 and "not registered" in msg
        h = await backend.health()
        assert not h.ready and h.data["torchserve"] == "Healthy" and "nope" in h.msg

    _backend_run(service, scenario, model="nope")


# ----------------------------------------------------------------------------- start-up checks (no server)


def test_refuses_ports_taken_by_something_else(tmp_models, capsys):
    import client_infer

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        svc = service_for(tmp_models, "busy")
        svc.ports["service_port"] = port
        code = client_infer.main(svc.args()[2:])
    err = capsys.readouterr().err
    assert code == 2 and f"port {port} (service) is in use" in err and "--service_port" in err


def test_missing_checkpoint_and_gpu_have_clear_errors(tmp_models, capsys):
    import torch

    import client_infer

    assert client_infer.main(["--model_path", str(tmp_models), "--used_model", "nope.pth"]) == 2
    assert "checkpoint not found" in capsys.readouterr().err
    if not torch.cuda.is_available():
        svc = service_for(tmp_models, "gpu")
        assert client_infer.main(svc.args("--device", "cuda")[2:]) == 2
        assert "no CUDA GPU" in capsys.readouterr().err


def test_model_that_fails_to_load_is_reported_with_the_worker_error(tmp_models):
    (tmp_models / "broken.pth").write_bytes(b"this is not a checkpoint")
    svc = service_for(tmp_models, "broken")
    run = subprocess.run(
        svc.args("--used_model", "broken.pth", "--startup_timeout", "60"),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert run.returncode == 2
    assert "worker error: ValueError: cannot load model checkpoint" in run.stderr and "model_log.log" in run.stderr
    assert not ts_processes(svc.run_dir)


# ----------------------------------------------------------------------------- shutdown (last: it stops the service)


def test_crashed_run_leftover_is_cleaned_and_shutdown_leaves_nothing(service, tmp_models):
    state = ServeState.load(service.run_dir)
    assert state is not None and group_alive(state.ts_pgid)
    service.stop(signal.SIGKILL)  # a crash: TorchServe keeps running in its own process group
    assert group_alive(state.ts_pgid) and ts_processes(service.run_dir)

    again = service_for(tmp_models, "restart")  # same run root: finds the orphan via state.json and stops it
    again.ports = service.ports  # and needs the very ports the orphan holds
    try:
        again.start()
        assert not group_alive(state.ts_pgid) and not ts_processes(service.run_dir)
        assert "left over" in again.log()
        assert predict(again, json={"content": b64(make_video(frames=2))}).status_code == 200
        new_state = ServeState.load(again.run_dir)
    finally:
        code = again.stop(signal.SIGTERM)
    assert code == 0
    assert not group_alive(new_state.ts_pgid)
    assert not ts_processes(again.run_dir)
    assert ServeState.load(again.run_dir).ts_pgid is None
    assert not (again.run_dir / "key_file.json").exists()
