"""KServe: the exported storage layout, the v1 protocol against TorchServe started from it exactly as KServe's
TorchServe runtime starts it, the proxy's route through ``KServeBackend``, and the manifests in deploy/kserve/.

Kubernetes itself, Knative's autoscaling and KServe's storage initializer and model server cannot run here
(docs/deploy.md says what was and was not run); the manifests are checked against the InferenceService CRD
fields that KServe documents. The ``kserve`` Python package is not a test dependency: ``pip install --dry-run
kserve`` (0.21.0) wants 40 more packages and psutil 5.9.8 against our pinned 7.2.2.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import requests
import yaml
from aiohttp import ClientSession

import client_infer
from common.paths import ROOT
from proxy import run as proxy_run
from proxy.app import ProxyConfig, serve
from proxy.backend import KServeBackend
from proxy.run import KSERVE_CLIP_TIMEOUT
from serving.torchserve import KSERVE_ROOT, free_port, kserve_overrides, read_properties, write_properties
from testing.clips import encode_video, moving_clip, probe
from testing.services import KServeLayoutServer, b64, needs_java, tiny_checkpoint
from wire import v1
from wire.contract import HEALTH_PATH, PREDICT_PATH, TIMING_HEADER
from wire.v1 import V1_PREDICT_SUFFIX

DEPLOY = ROOT / "deploy" / "kserve"
MODEL = "frvsr"  # the model name the manifests and docs/deploy.md use (--model_name frvsr)


def manifests() -> dict[str, dict]:
    """Every document in deploy/kserve/*.yaml by kind."""
    docs = [d for f in sorted(DEPLOY.glob("*.yaml")) for d in yaml.safe_load_all(f.read_text()) if d]
    by_kind = {d["kind"]: d for d in docs}
    assert len(by_kind) == len(docs), "one document of each kind"
    return by_kind


def wrapper_keys(config: Path) -> dict[str, str]:
    """config.properties read the way KServe's model server in the TorchServe image reads it (every line with
    '=', comments included, split at the first '='): our comments must not shadow a key it needs."""
    keys = {}
    for line in config.read_text().splitlines():
        if "=" in line:
            name, value = line.split("=", 1)
            keys[name.strip()] = value.strip()
    return keys


# ----------------------------------------------------------------------------- the exported config (fast)


def test_kserve_config_has_what_the_runtime_needs(tmp_path):
    overrides = kserve_overrides(MODEL, "frvsr.mar", "1.0", 1, 546, 49463640, 272629760, gpu=False)
    cfg = write_properties(ROOT / "config.properties", tmp_path / "config.properties", overrides, note="test")
    props, wrapper = read_properties(cfg), wrapper_keys(cfg)
    for key in ("inference_address", "management_address", "model_store", "model_snapshot"):
        assert wrapper[key] == props[key]  # what KServe's model server reads is what TorchServe reads
    assert props["inference_address"] == "http://0.0.0.0:8085"  # KServe's server forwards to :8085
    assert props["metrics_address"] == "http://0.0.0.0:8082" and props["metrics_mode"] == "prometheus"
    assert props["model_store"] == f"{KSERVE_ROOT}/model-store"
    assert props["service_envelope"] == "kserve" and props["enable_envvars_config"] == "true"
    assert props["install_py_dep_per_model"] == "false" and props["disable_token_authorization"] == "true"
    assert props["load_models"] == "" and props["max_request_size"] == "49463640"
    snap = json.loads(props["model_snapshot"])
    entry = snap["models"][MODEL]["1.0"]
    assert snap["modelCount"] == 1 and entry["marName"] == "frvsr.mar" and entry["defaultVersion"] is True
    assert (entry["minWorkers"], entry["maxWorkers"], entry["batchSize"], entry["responseTimeout"]) == (1, 1, 1, 546)


def test_v1_helpers_wrap_and_unwrap():
    body = json.dumps({"content": "AAAA", "format": "mp4"}).encode()
    assert json.loads(v1.request(body)) == {"instances": [{"content": "AAAA", "format": "mp4"}]}
    assert v1.read_reply(b'{"predictions": [{"content": "QUJD", "elapsed_time": 1.5}]}') == (b"QUJD", 1.5)
    with pytest.raises(ValueError, match="no predictions"):
        v1.read_reply(b'{"error": "x"}')
    assert v1.error_message(b'{"code": 415, "type": "X", "message": "not a video"}') == "not a video"
    assert v1.error_message(b'{"error": "{\\"code\\": 422, \\"message\\": \\"over max_pixels\\"}"}') == (
        "over max_pixels"
    )
    assert v1.error_message(b"upstream connect error") == "upstream connect error"


@pytest.mark.parametrize(
    "argv,words",
    [
        (["--kserve_url", "http://frvsr.example.com/predict"], "/v1/models/<name>"),
        (["--kserve_url", "http://h/v1/models/frvsr", "--kserve_token_file", "/no/such/token"], "does not exist"),
        (["--kserve_url", "http://h/v1/models/frvsr", "--export_kserve", "x"], "use one"),
        (["--kserve_token_file", "t"], "goes with --kserve_url"),
    ],
)
def test_kserve_options_refuse_bad_input_with_what_to_do(argv, words, capsys):
    assert client_infer.main(argv) == 2
    assert words in capsys.readouterr().err


def test_proxy_in_front_of_kserve_needs_no_model_libraries():
    """The proxy image (deploy/kserve/Dockerfile.proxy) holds only ``proxy/``, ``wire/``, aiohttp and PyAV: what
    ``python -m proxy`` imports (checked in a fresh interpreter), nothing of the model or the servers."""
    code = (
        "import sys, proxy.run; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('torch', 'numpy', 'cv2', 'ts', 'requests', 'psutil', 'yaml', 'model', 'video', 'handler', 'serving', "
        "'train', 'common')))"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.strip() == "[]", r.stdout + r.stderr
    dockerfile = (DEPLOY / "Dockerfile.proxy").read_text()
    pins = dict(line.split("==") for line in (ROOT / "requirements.txt").read_text().split() if "==" in line)
    assert f"aiohttp=={pins['aiohttp']}" in dockerfile and f"av=={pins['av']}" in dockerfile  # requirements.txt's pins
    copied = re.findall(r"^COPY (\S+)", dockerfile, flags=re.M)
    assert sorted(copied) == ["proxy/", "wire/"], copied
    assert 'ENTRYPOINT ["python", "-m", "proxy"]' in dockerfile


# ----------------------------------------------------------------------------- manifests (fast)


def test_inferenceservice_has_the_fields_kserve_requires():
    isvc = manifests()["InferenceService"]
    assert isvc["apiVersion"] == "serving.kserve.io/v1beta1" and isvc["metadata"]["name"] == "frvsr"
    labels = isvc["metadata"]["labels"]
    assert labels["serviceEnvelope"] == "kserve"  # = the exported service_envelope
    assert labels["networking.knative.dev/visibility"] == "cluster-local"  # only the proxy is public
    pred = isvc["spec"]["predictor"]
    # fields of the v1beta1 PredictorSpec (ComponentExtensionSpec + PodSpec) and ModelSpec used here
    assert set(pred) <= {"minReplicas", "maxReplicas", "scaleMetric", "scaleTarget", "containerConcurrency", "timeout",
                         "model", "serviceAccountName", "nodeSelector", "tolerations"}  # fmt: skip
    assert set(pred["model"]) <= {"modelFormat", "protocolVersion", "storageUri", "runtime", "env", "resources"}
    assert pred["model"]["modelFormat"]["name"] == "pytorch" and pred["model"]["protocolVersion"] == "v1"
    assert re.fullmatch(r"(s3|gs|pvc|https?)://\S+", pred["model"]["storageUri"])
    assert 1 <= pred["minReplicas"] <= pred["maxReplicas"]
    assert pred["scaleMetric"] == "concurrency" and pred["scaleTarget"] == 1 and pred["containerConcurrency"] == 1
    # above the largest responseTimeout the exporter gives on 2 cores; Knative's default cap is 600 s
    assert pred["timeout"] == KSERVE_CLIP_TIMEOUT and 120 <= pred["timeout"] <= 600
    env = {e["name"]: e["value"] for e in pred["model"]["env"]}
    assert env["OMP_WAIT_POLICY"] == "PASSIVE"  # 5x slower without it (docs/deploy.md#capacity)
    res = pred["model"]["resources"]
    assert res["requests"]["cpu"] == res["limits"]["cpu"] == "2"  # the capacity table is per 2 cores
    mem = {k: int(v["memory"].removesuffix("Gi")) * 1024 for k, v in res.items()}
    assert 1024 <= mem["requests"] <= mem["limits"]  # worker ~0.5 GiB peak + JVM ~0.2 GiB + KServe's server


def test_proxy_deployment_points_at_the_predictor_with_valid_options():
    m = manifests()
    isvc, dep, svc, pol = m["InferenceService"], m["Deployment"], m["Service"], m["NetworkPolicy"]
    ns = isvc["metadata"]["namespace"]
    assert dep["apiVersion"] == "apps/v1" and dep["metadata"]["namespace"] == svc["metadata"]["namespace"] == ns
    labels = dep["spec"]["template"]["metadata"]["labels"]
    assert dep["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert svc["spec"]["selector"].items() <= labels.items()
    (container,) = dep["spec"]["template"]["spec"]["containers"]
    assert container["command"] == ["python", "-m", "proxy"]
    args = proxy_run.parse_args(container["args"])  # every option exists and parses
    backend = KServeBackend(args.kserve_url)
    name = isvc["metadata"]["name"]
    assert backend.url == f"http://{name}-predictor.{ns}.svc.cluster.local/v1/models/{MODEL}"
    pred = isvc["spec"]["predictor"]
    assert args.workers == pred["maxReplicas"] * pred["containerConcurrency"]
    assert args.response_timeout == pred["timeout"] and args.host == "0.0.0.0"
    port = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert port["http"] == args.service_port and svc["spec"]["ports"][0]["targetPort"] == "http"
    assert container["readinessProbe"]["httpGet"]["path"] == HEALTH_PATH
    assert args.max_queued_mb * 2**20 < int(container["resources"]["limits"]["memory"].removesuffix("Mi")) * 2**20
    # only the proxy (and Knative's system) may reach the predictor pods
    assert pol["spec"]["podSelector"]["matchLabels"] == {"serving.kserve.io/inferenceservice": name}
    froms = pol["spec"]["ingress"][0]["from"]
    assert {"podSelector": {"matchLabels": {"app": labels["app"]}}} in froms


# ----------------------------------------------------------------------------- real TorchServe (slow)


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Path:
    """client_infer.py --export_kserve of a tiny model (the real CLI, the real archiver)."""
    tmp = tmp_path_factory.mktemp("kserve")
    tiny_checkpoint(tmp)
    out = tmp / "export"
    (out / "model-store").mkdir(parents=True)
    (out / "model-store" / "stale.mar").write_bytes(b"an earlier export")  # KServe refuses two .mar files
    cmd = [sys.executable, str(ROOT / "client_infer.py"), "--model_path", str(tmp), "--used_model", "tiny.pth"]
    cmd += ["--model_name", MODEL, "--export_kserve", str(out), "--response_timeout", "120"]
    cmd += ["--run_dir", str(tmp / "work"), "--x264_preset", "ultrafast"]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"POST /v1/models/{MODEL}:predict" in r.stdout
    return out


@pytest.fixture(scope="module", params=["kserve", ""], ids=["envelope", "no-envelope"])
def predictor(request, exported, tmp_path_factory):
    """TorchServe from the export, started as KServe's runtime starts it, with the InferenceService's env;
    ``TS_SERVICE_ENVELOPE`` as the label sets it (``kserve``) and empty, as a missing label leaves it."""
    env = {e["name"]: e["value"] for e in manifests()["InferenceService"]["spec"]["predictor"]["model"]["env"]}
    server = KServeLayoutServer(exported, tmp_path_factory.mktemp("ts"), envelope=request.param, env=env)
    with server.start(MODEL):
        yield server


@pytest.mark.slow
def test_export_writes_the_kserve_storage_layout(exported):
    assert sorted(p.relative_to(exported).as_posix() for p in exported.rglob("*")) == [
        "config", "config/config.properties", "model-store", f"model-store/{MODEL}.mar",
    ]  # fmt: skip
    props = read_properties(exported / "config" / "config.properties")
    entry = json.loads(props["model_snapshot"])["models"][MODEL]["1.0"]
    assert entry["marName"] == f"{MODEL}.mar" and entry["responseTimeout"] == 120
    assert props["service_envelope"] == "kserve" and props["inference_address"] == "http://0.0.0.0:8085"


def v1_post(ts: KServeLayoutServer, body: dict) -> requests.Response:
    return requests.post(f"{ts.inference_url}/v1/models/{MODEL}{V1_PREDICT_SUFFIX}", json=body, timeout=300)


@pytest.mark.slow
@needs_java
def test_v1_request_gets_a_4x_video(predictor):
    video = encode_video(moving_clip(24, 48, 64), "mp4_h264", fps=12)
    r = v1_post(predictor, {"instances": [{"content": b64(video)}]})
    assert r.status_code == 200, r.text[:500]
    body = r.json()
    assert set(body) == {"predictions"} and len(body["predictions"]) == 1
    pred = body["predictions"][0]
    assert set(pred) == {"content", "elapsed_time"} and 0 < pred["elapsed_time"] < 300
    out = base64.b64decode(pred["content"], validate=True)
    info = probe(out)  # decoded with PyAV, every frame
    assert (info["width"], info["height"], info["frames"], info["fps"]) == (256, 192, 24, 12)
    assert "frames=24" in r.headers[TIMING_HEADER]
    print(f"v1: HTTP {r.status_code}, keys {sorted(body)} / {sorted(pred)}, {info['frames']} frames "
          f"{info['width']}x{info['height']}, {len(out)} bytes, elapsed_time {pred['elapsed_time']}")  # fmt: skip


@pytest.mark.slow
@needs_java
@pytest.mark.parametrize(
    "body,status,words",
    [
        ({"instances": [{"content": b64(b"plain text, not a video " * 20)}]}, 415, "not a video"),
        ({"instances": [{"content": b64(encode_video(moving_clip(2, 200, 220)))}]}, 422, "max_pixels"),
        ({"instances": [{"content": "AAAA"}, {"content": "AAAA"}]}, 400, "one clip"),
        ({"content": "AAAA"}, 400, '{"instances": [{"content"'),  # the platform body on the v1 route
    ],
)
def test_v1_errors_keep_status_and_message(predictor, body, status, words):
    if "instances" not in body and not predictor.envelope:
        # without the envelope the handler cannot see the route: a platform body is served as one
        status, words = 415, "not a video"
    r = v1_post(predictor, body)
    assert r.status_code == status and words in r.json()["message"], r.text[:500]


@pytest.mark.slow
@needs_java
def test_proxy_route_through_the_kserve_backend(predictor):
    """POST /autotable/predict on the proxy, forwarded as v1 to the predictor: the platform contract end to end."""
    video = encode_video(moving_clip(10, 32, 48), "avi_mjpeg", fps=10)

    async def scenario():
        port = free_port()
        backend = KServeBackend(f"{predictor.inference_url}/v1/models/{MODEL}")
        runner = await serve(ProxyConfig(timeout_s=300, limits={"max_pixels": 40000}), backend, "127.0.0.1", port)
        url = f"http://127.0.0.1:{port}"
        try:
            async with ClientSession() as s:
                async with s.post(url + PREDICT_PATH, json={"content": b64(video)}) as r:
                    ok = r.status, await r.json(), r.headers.get(TIMING_HEADER, "")
                async with s.post(url + PREDICT_PATH, json={"content": b64(b"not a video at all" * 30)}) as r:
                    bad = r.status, await r.json()
                async with s.get(url + HEALTH_PATH) as r:
                    health = r.status, await r.json()
        finally:
            await runner.cleanup()
        return ok, bad, health

    (status, body, timing), (bad_status, bad), (h_status, health) = asyncio.run(scenario())
    assert status == 200 and body["code"] == 200 and body["msg"] == "ok", body
    info = probe(base64.b64decode(body["data"]["content"]))
    assert info["format"] == "avi" and (info["width"], info["height"], info["frames"]) == (192, 128, 10)
    assert "frames=10" in timing
    assert bad_status == bad["code"] == 415 and "not a video" in bad["msg"] and bad["data"] is None
    # GET /v1/models/<name> is KServe's model server's route, not TorchServe's: here the proxy says so
    assert h_status == 503 and health["data"]["kserve"].endswith(f"/v1/models/{MODEL}")
    assert "HTTP 404" in health["msg"]
