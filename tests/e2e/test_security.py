"""Security defaults of a real run: TorchServe on loopback only, token-protected management and inference,
registration limited to the local model store, and no request/response content in any log.

``testing.launcher.ServiceProcess`` runs client_infer.py on free ports with a tiny model; TorchServe starts once here.
What test_serving already checks (management refused without a token, taken ports refused) is not repeated.
"""

from __future__ import annotations

import base64
import ipaddress
import uuid

import psutil
import pytest
import requests

from serving.torchserve import read_properties
from testing.clips import make_video
from testing.services import b64, needs_java, predict, tiny_service

pytestmark = [pytest.mark.slow, needs_java]

# A unique run of base64 characters (length divisible by 4, so it stays valid base64 inside content).
MARKER = "SeCrEtMaRkEr" + uuid.uuid4().hex.upper()[:12] + "AbCd"


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    svc = tiny_service(tmp_path_factory.mktemp("security"))
    yield svc
    svc.stop()


def _loopback(addr: str) -> bool:
    ip = ipaddress.ip_address(addr.split("%")[0])
    mapped = getattr(ip, "ipv4_mapped", None)  # the JVM reports ::ffff:127.0.0.1
    return (mapped or ip).is_loopback


def test_run_config_binds_every_torchserve_address_to_loopback(service):
    props = read_properties(service.run_dir / "config.properties")
    for key in ("inference_address", "management_address", "metrics_address"):
        assert props[key].startswith("http://127.0.0.1:"), (key, props[key])
    for key in ("grpc_inference_address", "grpc_management_address"):
        assert props.get(key, "127.0.0.1") == "127.0.0.1", (key, props.get(key))
    assert props["disable_token_authorization"] == "false"
    assert "http" not in props["allowed_urls"] and props["allowed_urls"].startswith("file://")


def test_listening_sockets_are_loopback_only(service):
    jvms = service.processes(worker=False)
    assert jvms, "TorchServe JVM not found"
    listening = []
    for p in jvms + [psutil.Process(service.proc.pid)]:
        # Process.connections: psutil 5.9 (pinned for kserve) has not the 6.0 name net_connections
        listening += [c.laddr for c in p.connections(kind="inet") if c.status == psutil.CONN_LISTEN]
    ports = {a.port for a in listening}
    assert {service.ports[k] for k in ("inference_port", "management_port", "metrics_port", "service_port")} <= ports
    assert all(_loopback(a.ip) for a in listening), listening


def test_management_with_token_works_and_inference_without_token_is_refused(service):
    r = service.management("GET", "/models")
    assert r.status_code == 200 and any(m["modelName"] == "tiny" for m in r.json()["models"])
    inference = f"http://127.0.0.1:{service.ports['inference_port']}/predictions/tiny"
    r = requests.post(inference, json={"content": b64(make_video(frames=2))}, timeout=30)
    assert r.status_code in (400, 401, 403) and "Token" in r.text
    r = requests.get(service.mgmt + "/models", headers={"Authorization": "Bearer not-the-key"}, timeout=10)
    assert r.status_code in (400, 401, 403)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:9/evil.mar",
        "https://example.invalid/evil.mar",
        "file:///etc/passwd",
        "file:///tmp/model_store_elsewhere/evil.mar",
    ],
)
def test_registration_outside_the_model_store_is_refused_even_with_the_token(service, url):
    r = service.management("POST", "/models", url=url, initial_workers=1, synchronous="true")
    assert 400 <= r.status_code < 500, (r.status_code, r.text)
    models = service.management("GET", "/models").json()["models"]
    assert [m["modelName"] for m in models] == ["tiny"]


def test_no_request_or_response_content_in_any_log(service):
    video = make_video(frames=3, width=24, height=24)
    video += b"\0" * (-len(video) % 3)  # so the marker starts on a base64 group boundary
    ok = predict(service, json={"content": b64(video) + MARKER})  # trailing bytes after the AVI are ignored
    assert ok.status_code == 200, ok.text[:300]
    out_b64 = ok.json()["data"]["content"]
    bad = predict(service, json={"content": MARKER * 40})  # not a video: 415, through a worker
    assert bad.status_code == 415, bad.text[:300]
    assert MARKER not in bad.json()["msg"]
    bad_b64 = predict(service, json={"content": MARKER + "#"})  # refused by the proxy
    assert bad_b64.status_code == 400 and MARKER not in bad_b64.json()["msg"]

    out_sample = out_b64[len(out_b64) // 2 : len(out_b64) // 2 + 40]
    raw_sample = base64.b64decode(MARKER).hex()
    logs = {"proxy/client_infer output": service.log()}
    for f in service.run_dir.rglob("*"):
        if f.is_file() and f.suffix in (".log", ".txt", ".json", "") and f.stat().st_size < 50 * 2**20:
            logs[str(f.relative_to(service.run_dir))] = f.read_text(errors="replace")
    assert any("logs/" in k for k in logs), sorted(logs)
    assert "/autotable/predict -> 200" in logs["proxy/client_infer output"]  # the proxy does log requests
    for name, text in logs.items():
        assert MARKER not in text, f"request content found in {name}"
        assert out_sample not in text, f"response content found in {name}"
        assert raw_sample not in text, f"decoded request bytes found in {name}"
