"""Helpers for the tests that run the real service: a tiny checkpoint, a started ``ServiceProcess`` and a
predict call. The launcher itself is ``serving.launcher`` (bench/ uses it too)."""

from __future__ import annotations

import base64
import subprocess
from pathlib import Path

import pytest
import requests

from model.checkpoint import save_checkpoint
from model.frvsr import FRVSR, FRVSRConfig
from serving.contract import PREDICT_PATH
from serving.launcher import ServiceProcess

TINY = FRVSRConfig(channels=8, blocks=1, fnet_channels=4)
needs_java = pytest.mark.skipif(
    subprocess.run(["java", "-version"], capture_output=True).returncode != 0,
    reason="TorchServe needs Java >= 17 (not found)",
)


def tiny_checkpoint(folder: Path, name: str = "tiny.pth", cfg: FRVSRConfig = TINY) -> Path:
    """A fresh (untrained) FRVSR checkpoint: the service does real work at test speed."""
    folder.mkdir(parents=True, exist_ok=True)
    save_checkpoint(folder / name, FRVSR(cfg))
    return folder / name


def tiny_service(folder: Path, name: str = "svc", extra: tuple = ("--response_timeout", "120")) -> ServiceProcess:
    """client_infer.py serving a tiny model from ``folder``, started and healthy."""
    tiny_checkpoint(folder)
    return ServiceProcess(folder, "tiny.pth", folder, name=name, extra=list(extra)).start()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def predict(svc: ServiceProcess, **kw) -> requests.Response:
    return requests.post(svc.url + PREDICT_PATH, timeout=300, **kw)
