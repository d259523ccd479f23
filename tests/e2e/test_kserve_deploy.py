"""deploy/kserve/ checked statically (no image can be built or pushed here): the TorchServe runtime image we
name (torchserve-kfs 0.12.0), its ServingRuntime and the InferenceService that uses it, and the KServe-native
predictor's image and InferenceService; nothing in deploy/ or the docs points at an older runtime tag."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
import yaml

from common.paths import ROOT
from serving.kserve_model import parse_args

DEPLOY = ROOT / "deploy" / "kserve"
SAFE_TAG = "0.12.0"  # TorchServe's last release: the CVE-2024-35198 / -35199 fixes are in 0.11.0 and later


def pins() -> dict[str, str]:
    text = (ROOT / "requirements.txt").read_text() + (ROOT / "requirements-kserve.txt").read_text()
    return dict(re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)", text, flags=re.M))


def test_the_runtime_image_is_torchserve_0_12_with_our_pins():
    docker = (DEPLOY / "Dockerfile.runtime").read_text()
    assert re.findall(r"^FROM (\S+)", docker, flags=re.M) == [f"pytorch/torchserve-kfs:{SAFE_TAG}"]
    p = pins()
    for name in ("torch", "av", "numpy", "pyyaml"):
        assert f"{name}=={p[name]}" in docker, name


def test_the_servingruntime_and_the_inferenceservice_use_that_image():
    (rt,) = list(yaml.safe_load_all((DEPLOY / "servingruntime.yaml").read_text()))
    assert rt["kind"] == "ServingRuntime" and rt["apiVersion"] == "serving.kserve.io/v1alpha1"
    (container,) = rt["spec"]["containers"]
    assert container["image"].endswith(f"frvsr-torchserve-kfs:{SAFE_TAG}-1")
    assert container["args"][:2] == ["torchserve", "--start"]
    assert {"name": "pytorch", "version": "1", "autoSelect": False} in rt["spec"]["supportedModelFormats"]
    isvc = yaml.safe_load((DEPLOY / "inferenceservice.yaml").read_text())
    assert isvc["spec"]["predictor"]["model"]["runtime"] == rt["metadata"]["name"]
    assert isvc["metadata"]["namespace"] == rt["metadata"]["namespace"]


def test_nothing_points_at_an_older_torchserve_runtime():
    files = [*DEPLOY.rglob("*"), ROOT / "README.md", *(ROOT / "docs").glob("*.md")]
    tags = {f.name: re.findall(r"torchserve-kfs:(\S+)", f.read_text()) for f in files if f.is_file()}
    old = {name: t for name, found in tags.items() for t in found if not t.strip("`'\",.)").startswith(SAFE_TAG)}
    assert not old, old
    assert sum(len(t) for t in tags.values()) >= 3  # the Dockerfile, the ServingRuntime's image, the docs


@pytest.mark.slow  # a subprocess that imports KServe's server
def test_the_native_predictor_image_runs_the_kserve_server_with_what_it_imports():
    docker = (DEPLOY / "native" / "Dockerfile").read_text()
    assert "requirements-kserve.txt" in docker and f"torch=={pins()['torch']}" in docker
    entry = re.search(r"^ENTRYPOINT (\[.*\])", docker, flags=re.M).group(1)
    assert yaml.safe_load(entry)[:3] == ["python", "-m", "serving.kserve_model"]
    copied = {c.rstrip("/") for c in re.findall(r"^COPY (\S+)/ ", docker, flags=re.M)}
    code = (
        "import sys, serving.kserve_model, handler.kserve_predictor; "
        "print(sorted({m.split('.')[0] for m in sys.modules}))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    ours = {"common", "wire", "model", "video", "handler", "serving", "proxy", "train", "testing", "bench"}
    imported = set(yaml.safe_load(out.stdout)) & ours
    assert imported <= copied, imported - copied


def test_the_native_inferenceservice_starts_the_server_with_valid_options():
    isvc = yaml.safe_load((DEPLOY / "native" / "inferenceservice.yaml").read_text())
    assert isvc["kind"] == "InferenceService" and isvc["apiVersion"] == "serving.kserve.io/v1beta1"
    pred = isvc["spec"]["predictor"]
    (c,) = pred["containers"]
    assert c["name"] == "kserve-container" and c["ports"][0]["containerPort"] == 8080
    entry = yaml.safe_load(re.search(r"^ENTRYPOINT (\[.*\])", (DEPLOY / "native" / "Dockerfile").read_text(), re.M)[1])
    args = parse_args(entry[3:] + c["args"])
    assert args.http_port == 8080 and args.model_path == "/mnt/models" and args.model_name == "frvsr"
    assert pred["containerConcurrency"] == 1 and 120 <= pred["timeout"] <= 600
    assert c["resources"]["requests"]["cpu"] == c["resources"]["limits"]["cpu"] == "2"
