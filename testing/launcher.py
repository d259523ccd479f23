"""Start ``client_infer.py`` as a subprocess on free ports and wait until it is healthy: the one launcher used
by the serving tests, ``bench/soak.py`` and ``bench/measure.py``.

    with ServiceProcess(model_dir, "tiny.pth", work).start() as svc:
        requests.post(svc.url + PREDICT_PATH, json={"content": ...})

The service's output goes to ``<work>/client_infer-<name>.log`` (``log()`` reads it back), its run folder to
``<work>/runs/<name>`` and its archives to ``<work>/store``. ``stop()`` (SIGTERM, then SIGKILL) ends it; the
service itself stops TorchServe and its workers.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import requests

from common.paths import ROOT
from serving.torchserve import TS_MAIN_CLASS, ServeState, free_port, group_members
from wire.contract import HEALTH_PATH
from wire.tokens import read_keys

PORT_OPTIONS = ("service_port", "inference_port", "management_port", "metrics_port")


class ServiceError(RuntimeError):
    """The service exited or did not become healthy; the message holds the end of its output."""


def wait_healthy(url: str, timeout_s: float, proc: subprocess.Popen | None = None) -> bool:
    """Poll ``GET url/health`` until 200 (True), ``proc`` exits or ``timeout_s`` passes (False)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            return False
        try:
            if requests.get(url + HEALTH_PATH, timeout=5).status_code == 200:
                return True
        except requests.RequestException:
            pass
        time.sleep(0.3)
    return False


class ServiceProcess:
    """One ``client_infer.py`` serving ``model_dir/used_model`` on ports of its own."""

    def __init__(self, model_dir: Path, used_model: str, work: Path, name: str = "svc", extra: list[str] | tuple = ()):
        self.model_dir = Path(model_dir)
        self.used_model = used_model
        self.work = Path(work)
        self.name = name
        self.extra = list(extra)
        self.ports = {k: free_port() for k in PORT_OPTIONS}
        self.run_dir = self.work / "runs" / name
        self.log_path = self.work / f"client_infer-{name}.log"
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.ports['service_port']}"

    @property
    def mgmt(self) -> str:
        return f"http://127.0.0.1:{self.ports['management_port']}"

    def args(self, *extra: str) -> list[str]:
        """The full command line (``extra`` last, so it overrides)."""
        args = [
            sys.executable,
            str(ROOT / "client_infer.py"),
            "--model_path",
            str(self.model_dir),
            "--used_model",
            self.used_model,
            "--model_store",
            str(self.work / "store"),
            "--run_dir",
            str(self.run_dir),
        ]
        for k, v in self.ports.items():
            args += [f"--{k}", str(v)]
        return args + self.extra + list(extra)

    def start(self, timeout_s: float = 300) -> ServiceProcess:
        """Start and wait for ``GET /health`` 200; ServiceError (with the output's end) otherwise."""
        self.work.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as out:
            self.proc = subprocess.Popen(
                self.args(), cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        if not wait_healthy(self.url, timeout_s, self.proc):
            code = self.proc.poll()
            self.stop()
            why = f"exited with code {code}" if code is not None else f"was not healthy within {timeout_s:.0f} s"
            raise ServiceError(f"client_infer.py ({self.name}) {why}; its output ({self.log_path}):\n{self.log(60)}")
        return self

    def log(self, lines: int | None = None) -> str:
        """The service's output so far (the last ``lines`` lines)."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return text if lines is None else "\n".join(text.splitlines()[-lines:])

    def keys(self) -> dict[str, str]:
        return read_keys(self.run_dir / "key_file.json")

    def management(self, method: str, path: str, timeout: float = 180, **params) -> requests.Response:
        """A call to TorchServe's management API with this run's management token."""
        headers = {"Authorization": f"Bearer {self.keys()['management']}"}
        return requests.request(method, self.mgmt + path, params=params or None, headers=headers, timeout=timeout)

    def pgid(self) -> int | None:
        """TorchServe's process group (from the run's state.json)."""
        state = ServeState.load(self.run_dir)
        return state.ts_pgid if state else None

    def processes(self, worker: bool) -> list[psutil.Process]:
        """TorchServe's Python workers (``worker=True``) or its JVM."""
        pgid = self.pgid()
        found = []
        for p in group_members(pgid) if pgid else []:
            try:
                cmd = " ".join(p.cmdline())
            except psutil.Error:
                continue
            if ("model_service_worker" in cmd) if worker else (TS_MAIN_CLASS in cmd):
                found.append(p)
        return found

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int | None:
        """Signal the service and wait; SIGKILL when it does not exit within ``timeout``. Its exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def __enter__(self) -> ServiceProcess:
        return self if self.proc is not None else self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
