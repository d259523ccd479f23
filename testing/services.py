"""Helpers for the tests that run the real service: a tiny checkpoint, a started ``ServiceProcess``, a predict
call, and TorchServe started from a KServe export the way KServe's runtime starts it (``KServeLayoutServer``).
The launcher of client_infer.py itself is ``testing.launcher`` (bench/ uses it too)."""

from __future__ import annotations

import base64
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from model.checkpoint import save_checkpoint
from model.frvsr import FRVSR, FRVSRConfig
from serving.torchserve import free_port, stop_group, torchserve_env
from testing.launcher import ServiceProcess
from wire.contract import PREDICT_PATH

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


class KServeLayoutServer:
    """TorchServe started exactly as KServe's TorchServe runtime starts it from an ``--export_kserve`` folder:
    ``torchserve --start --model-store=<folder>/model-store --ts-config=<folder>/config/config.properties``
    (the folder in place of /mnt/models), the ports moved to free loopback ones and ``TS_SERVICE_ENVELOPE`` set
    through ``TS_*`` variables, which the exported ``enable_envvars_config=true`` lets override the file. The
    CLI daemonizes the JVM; both live in one new process group, which ``stop()`` ends."""

    def __init__(self, folder: Path, work: Path, envelope: str = "kserve", env: dict[str, str] | None = None):
        self.folder, self.work = Path(folder), Path(work)
        self.extra_env = dict(env or {})  # the InferenceService's predictor env (the runtime adds it to the pod)
        self.ports = {k: free_port() for k in ("inference", "management", "metrics", "grpc_i", "grpc_m")}
        self.envelope = envelope
        self.pgid: int | None = None

    @property
    def inference_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['inference']}"

    @property
    def management_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['management']}"

    def env(self) -> dict[str, str]:
        p = self.ports
        return {
            **torchserve_env(self.work / "tmp", self.work / "logs"),  # apart from any other TorchServe
            "TS_INFERENCE_ADDRESS": f"http://127.0.0.1:{p['inference']}",
            "TS_MANAGEMENT_ADDRESS": f"http://127.0.0.1:{p['management']}",
            "TS_METRICS_ADDRESS": f"http://127.0.0.1:{p['metrics']}",
            "TS_GRPC_INFERENCE_PORT": str(p["grpc_i"]),
            "TS_GRPC_MANAGEMENT_PORT": str(p["grpc_m"]),
            "TS_SERVICE_ENVELOPE": self.envelope,  # what the runtime sets from the InferenceService's label
            **self.extra_env,
        }

    def start(self, model: str, timeout_s: float = 180) -> KServeLayoutServer:
        """Start and wait until ``model``'s worker is READY (loaded from the config's model_snapshot)."""
        self.work.mkdir(parents=True, exist_ok=True)
        cmd = [
            str(Path(sys.executable).parent / "torchserve"),
            "--start",
            f"--model-store={self.folder / 'model-store'}",
            f"--ts-config={self.folder / 'config' / 'config.properties'}",
        ]
        with open(self.work / "torchserve.out", "ab") as out:
            proc = subprocess.Popen(
                cmd, cwd=self.work, env=self.env(), stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.pgid = proc.pid
        proc.wait(timeout=60)  # the CLI returns once the JVM is launched
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                r = requests.get(f"{self.management_url}/models/{model}", timeout=5)
                if r.status_code == 200 and [w["status"] for w in r.json()[0]["workers"]] == ["READY"]:
                    return self
            except (requests.RequestException, ValueError, KeyError, IndexError):
                pass
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"TorchServe (KServe layout) not READY in {timeout_s:.0f} s; see {self.work}/logs")

    def stop(self) -> None:
        if self.pgid is not None:
            stop_group(self.pgid)
            self.pgid = None

    def __enter__(self) -> KServeLayoutServer:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
