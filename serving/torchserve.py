"""Run TorchServe for one client_infer.py session: per-run config, start, register, wait, stop, clean up.

Every run gets a folder (``runs/serve/<stamp>-<pid>/``) holding its config.properties copy, TorchServe's
working directory (so ``key_file.json`` lands there), logs, temp dir (worker sockets, pid file) and
``state.json`` naming the owning process. A later run uses ``state.json`` to recognise and stop a
TorchServe whose owner died (a crashed or SIGKILLed run), and never touches one whose owner is alive.
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil
import requests

from common.files import atomic_write_text
from proxy.run import StartupError
from wire.tokens import read_keys

log = logging.getLogger(__name__)

TS_MAIN_CLASS = "org.pytorch.serve.ModelServer"
STATE_FILE = "state.json"


class ServeError(StartupError):
    """TorchServe could not be started or did not become ready; the message says why and what to do."""


@dataclass(frozen=True)
class Ports:
    service: int = 8080  # the proxy: POST /autotable/predict
    inference: int = 8085
    management: int = 8081
    metrics: int = 8082
    grpc_inference: int = 7070  # unused by the product, but TorchServe always binds them
    grpc_management: int = 7071

    def required(self) -> dict[str, int]:
        """The ports a user addresses (a clash is an error); gRPC ones are moved instead."""
        return {
            "service": self.service,
            "inference": self.inference,
            "management": self.management,
            "metrics": self.metrics,
        }


# ----------------------------------------------------------------------------- config.properties


def read_properties(path: Path) -> dict[str, str]:
    """``key=value`` lines of a Java properties file (no continuation lines; ours has none)."""
    props = {}
    for line in Path(path).read_text().splitlines():
        line = line.strip()
        if line and not line.startswith(("#", "!")) and "=" in line:
            k, v = line.split("=", 1)
            props[k.strip()] = v.strip()
    return props


def write_properties(
    template: Path, dest: Path, overrides: dict[str, str], note: str = "set by client_infer.py for this run"
) -> Path:
    """Copy ``template`` (comments kept) with ``overrides`` replacing or appending keys (under ``# --- note``);
    atomic."""
    lines, seen = [], set()
    for line in Path(template).read_text().splitlines():
        key = line.split("=", 1)[0].strip() if "=" in line and not line.lstrip().startswith(("#", "!")) else None
        if key in overrides:
            line = f"{key}={overrides[key]}"
            seen.add(key)
        lines.append(line)
    extra = [f"{k}={v}" for k, v in overrides.items() if k not in seen]
    if extra:
        lines += ["", f"# --- {note}"] + extra
    atomic_write_text(dest, "\n".join(lines) + "\n")
    return dest


def java_regex_quote(path: str) -> str:
    """A literal path inside a Java regex (``\\Q...\\E``), backslashes doubled for the properties file."""
    return "\\\\Q" + path + "\\\\E"


def run_overrides(ports: Ports, model_store: Path, max_request_bytes: int, max_response_bytes: int) -> dict[str, str]:
    """What a run changes in config.properties: ports, absolute model store, sizes, allowed_urls."""
    store = str(Path(model_store).resolve())
    return {
        "inference_address": f"http://127.0.0.1:{ports.inference}",
        "management_address": f"http://127.0.0.1:{ports.management}",
        "metrics_address": f"http://127.0.0.1:{ports.metrics}",
        "grpc_inference_port": str(ports.grpc_inference),
        "grpc_management_port": str(ports.grpc_management),
        "model_store": store,
        "allowed_urls": "file://" + java_regex_quote(store + "/") + "[^/]+[.]mar",
        "max_request_size": str(max_request_bytes),
        "max_response_size": str(max_response_bytes),
    }


KSERVE_ROOT = "/mnt/models"  # where KServe's storage initializer puts the storageUri's content in the pod
KSERVE_PORTS = Ports(service=8080, inference=8085, management=8081, metrics=8082)  # 8080: KServe's own server


def kserve_overrides(
    model: str,
    mar_name: str,
    version: str,
    workers: int,
    response_timeout: int,
    max_request_bytes: int,
    max_response_bytes: int,
    gpu: bool,
) -> dict[str, str]:
    """What KServe's TorchServe runtime (``kserve-torchserve``) needs in ``config/config.properties``.

    The runtime runs ``torchserve --start --model-store=/mnt/models/model-store
    --ts-config=/mnt/models/config/config.properties``, then KServe's model server on :8080, which reads this
    file (``inference_address``, ``management_address``, ``model_store``, ``model_snapshot``), forwards
    ``POST /v1/models/<name>:predict`` to TorchServe on port 8085 without a token, and answers
    ``GET /v1/models/<name>`` itself. ``model_snapshot`` loads the .mar at start-up (no management call);
    ``enable_envvars_config`` lets ``TS_*`` variables (the runtime's ``TS_SERVICE_ENVELOPE``) override keys.
    """
    store = f"{KSERVE_ROOT}/model-store"
    snapshot = {
        "name": "startup.cfg",
        "modelCount": 1,
        "models": {
            model: {
                version: {
                    "defaultVersion": True,
                    "marName": mar_name,
                    "minWorkers": workers,
                    "maxWorkers": workers,
                    "batchSize": 1,
                    "maxBatchDelay": 100,
                    "responseTimeout": int(response_timeout),
                }
            }
        },
    }
    p = KSERVE_PORTS
    return {
        "inference_address": f"http://0.0.0.0:{p.inference}",  # inside the pod; KServe's server calls :8085
        "management_address": f"http://0.0.0.0:{p.management}",
        "metrics_address": f"http://0.0.0.0:{p.metrics}",  # Prometheus scrapes :8082/metrics
        "model_store": store,
        "allowed_urls": "file://" + java_regex_quote(store + "/") + "[^/]+[.]mar",
        "load_models": "",
        "model_snapshot": json.dumps(snapshot, separators=(",", ":")),
        "enable_model_api": "false",  # the pod serves the snapshot's model; nothing registers at run time
        "service_envelope": "kserve",  # KServe v1: TorchServe unwraps "instances" and wraps "predictions"
        "enable_envvars_config": "true",
        # KServe's model server calls TorchServe without a token; the pod is the boundary (docs/deploy.md)
        "disable_token_authorization": "true",
        "install_py_dep_per_model": "false",  # the runtime image has the dependencies; nothing is downloaded
        "default_workers_per_model": str(workers),
        "number_of_gpu": "1" if gpu else "0",
        "max_request_size": str(max_request_bytes),
        "max_response_size": str(max_response_bytes),
    }


# ----------------------------------------------------------------------------- ports and leftovers


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """An ephemeral loopback port that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_owner(port: int) -> psutil.Process | None:
    """The process listening on ``port``, when the OS lets us see it."""
    try:
        conns = psutil.net_connections(kind="tcp")
    except (psutil.AccessDenied, PermissionError):
        return None
    for c in conns:
        if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port and c.pid:
            try:
                return psutil.Process(c.pid)
            except psutil.NoSuchProcess:
                return None
    return None


def describe_process(p: psutil.Process | None) -> str:
    if p is None:
        return "another process (not visible to this user)"
    try:
        cmd = " ".join(p.cmdline())
    except psutil.Error:
        cmd = p.name() if p.is_running() else "?"
    if TS_MAIN_CLASS in cmd:
        cmd = "TorchServe (java ... " + TS_MAIN_CLASS + ")"
    return f"pid {p.pid}: {cmd[:160]}"


@dataclass
class ServeState:
    """``state.json`` of a run folder: who owns the TorchServe process group started there."""

    owner_pid: int
    owner_started: float  # psutil create_time, so a recycled pid is not mistaken for the owner
    ts_pgid: int | None
    ports: dict
    run_dir: str

    def save(self) -> None:
        atomic_write_text(Path(self.run_dir) / STATE_FILE, json.dumps(asdict(self), indent=2))

    @classmethod
    def load(cls, run_dir: Path) -> ServeState | None:
        try:
            return cls(**json.loads((Path(run_dir) / STATE_FILE).read_text()))
        except (OSError, ValueError, TypeError):
            return None

    def owner_alive(self) -> bool:
        try:
            return abs(psutil.Process(self.owner_pid).create_time() - self.owner_started) < 1.0
        except psutil.Error:
            return False


def group_alive(pgid: int | None) -> bool:
    if not pgid:
        return False
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def group_members(pgid: int) -> list[psutil.Process]:
    members = []
    for p in psutil.process_iter(["pid"]):
        try:
            if os.getpgid(p.pid) == pgid:
                members.append(p)
        except (ProcessLookupError, psutil.Error, OSError):
            continue
    return members


def stop_group(pgid: int, grace_s: float = 20.0) -> None:
    """SIGTERM the process group (TorchServe CLI, its JVM and the Python workers), SIGKILL what stays."""
    if not group_alive(pgid):
        return
    members = group_members(pgid)
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        return
    _, alive = psutil.wait_procs(members, timeout=grace_s)
    if alive or group_alive(pgid):
        log.warning("TorchServe did not stop within %.0f s; killing process group %d", grace_s, pgid)
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        psutil.wait_procs(group_members(pgid), timeout=5)


def stop_leftovers(runs_root: Path) -> list[str]:
    """Stop TorchServe groups left by runs whose owner process is gone; returns what was stopped."""
    stopped = []
    for state_file in sorted(Path(runs_root).glob(f"*/{STATE_FILE}")):
        st = ServeState.load(state_file.parent)
        if st is None or st.owner_alive() or not group_alive(st.ts_pgid):
            continue
        if not any(TS_MAIN_CLASS in " ".join(_cmdline(p)) for p in group_members(st.ts_pgid)):
            continue  # the pgid was recycled by something else
        log.warning("stopping TorchServe left over by a crashed run (%s, process group %d)", st.run_dir, st.ts_pgid)
        stop_group(st.ts_pgid)
        st.ts_pgid = None
        st.save()
        stopped.append(st.run_dir)
    return stopped


def _cmdline(p: psutil.Process) -> list[str]:
    try:
        return p.cmdline()
    except psutil.Error:
        return []


def check_ports(ports: Ports, runs_root: Path) -> None:
    """Raise ServeError naming the holder of any required port; live runs of ours are named as such."""
    problems = []
    for role, port in ports.required().items():
        if port_is_free(port):
            continue
        owner = port_owner(port)
        who = describe_process(owner)
        for state_file in Path(runs_root).glob(f"*/{STATE_FILE}"):
            st = ServeState.load(state_file.parent)
            if st and st.owner_alive() and port in st.ports.values():
                who = f"a running client_infer.py (pid {st.owner_pid}, run folder {st.run_dir})"
        problems.append(f"port {port} ({role}) is in use by {who}")
    if problems:
        raise ServeError(
            "cannot start: " + "; ".join(problems) + ". Stop that service (Ctrl-C in its terminal, or "
            "`torchserve --stop` for a TorchServe started by hand), or choose other ports with "
            "--service_port / --inference_port / --management_port / --metrics_port."
        )


# ----------------------------------------------------------------------------- the server


def torchserve_env(tmp: Path, logs: Path) -> dict[str, str]:
    """The environment of a TorchServe of its own: its temp folder and its logs (``os.environ`` underneath)."""
    tmp.mkdir(parents=True, exist_ok=True)
    logs.mkdir(parents=True, exist_ok=True)
    return {
        **os.environ,
        "TMPDIR": str(tmp),  # the torchserve CLI keeps its pid file in $TMPDIR: runs do not collide
        "TEMP": str(tmp),  # -> -Djava.io.tmpdir: worker unix sockets live here
        "LOG_LOCATION": str(logs),
        "METRICS_LOCATION": str(logs),
    }


class TorchServe:
    """One TorchServe process group started from a run folder; ``stop()`` leaves no process behind."""

    def __init__(self, run_dir: Path, config: Path, model_store: Path, ports: Ports, env: dict | None = None):
        self.run_dir = Path(run_dir).resolve()
        self.config = Path(config).resolve()
        self.model_store = Path(model_store).resolve()
        self.ports = ports
        self.env = env or {}
        self.proc: subprocess.Popen | None = None
        self.pgid: int | None = None
        self.logs = self.run_dir / "logs"
        self.key_file = self.run_dir / "key_file.json"
        self.management_url = f"http://127.0.0.1:{ports.management}"
        self.inference_url = f"http://127.0.0.1:{ports.inference}"

    def start(self) -> None:
        # TorchServe's pid file, JVM temp files and worker sockets in the run folder's tmp/
        env = {**torchserve_env(self.run_dir / "tmp", self.logs), **self.env}
        cmd = [
            sys.executable,
            "-m",
            "ts.model_server",
            "--start",
            "--foreground",
            "--ncs",
            "--model-store",
            str(self.model_store),
            "--ts-config",
            str(self.config),
        ]
        out = open(self.run_dir / "torchserve.out", "ab")
        self.proc = subprocess.Popen(
            cmd,
            cwd=self.run_dir,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        out.close()
        self.pgid = self.proc.pid  # start_new_session: the CLI leads a new group; the JVM and workers join it

    def wait_up(self, timeout_s: float) -> None:
        """Until the management API answers and key_file.json exists."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise ServeError(f"TorchServe exited during start-up (code {self.proc.returncode}).\n{self.log_tail()}")
            try:
                if self.key_file.exists():
                    requests.get(f"{self.inference_url}/ping", timeout=2)
                    return
            except requests.RequestException:
                pass
            time.sleep(0.3)
        raise ServeError(f"TorchServe did not open its APIs within {timeout_s:.0f} s.\n{self.log_tail()}")

    def keys(self) -> dict:
        return read_keys(self.key_file)

    def management(self, method: str, path: str, timeout: float = 30, **params) -> requests.Response:
        headers = {"Authorization": f"Bearer {self.keys()['management']}"}
        return requests.request(
            method, f"{self.management_url}{path}", params=params or None, headers=headers, timeout=timeout
        )

    def register(self, mar_name: str, workers: int, timeout_s: float) -> None:
        """Register ``mar_name`` from the model store and wait until its workers are up (synchronous)."""
        r = self.management(
            "POST", "/models", timeout=timeout_s + 10, url=mar_name, initial_workers=workers, synchronous="true"
        )
        if r.status_code != 200:
            raise ServeError(f"registering {mar_name} failed: HTTP {r.status_code} {r.text.strip()}\n{self.log_tail()}")

    def wait_ready(self, model: str, timeout_s: float) -> dict:
        """Until every worker of ``model``'s default version is READY; returns the describe entry."""
        deadline = time.monotonic() + timeout_s
        last = None
        while time.monotonic() < deadline:
            try:
                r = self.management("GET", f"/models/{model}")
                if r.status_code == 200:
                    last = r.json()[0]
                    workers = last.get("workers", [])
                    if workers and all(w.get("status") == "READY" for w in workers):
                        return last
            except (requests.RequestException, ValueError, KeyError, OSError):
                pass
            if self.proc is not None and self.proc.poll() is not None:
                break
            time.sleep(0.5)
        raise ServeError(
            f"model {model} did not become READY within {timeout_s:.0f} s (last status: {last}).\n{self.log_tail()}"
        )

    def log_tail(self, lines: int = 30) -> str:
        """The worker's last error (the usual reason a start fails), then the end of TorchServe's logs."""
        time.sleep(1.0)  # log4j writes asynchronously: let the worker's last lines land
        parts = []
        model_log = self.logs / "model_log.log"
        if model_log.exists():
            errors = [
                ln
                for ln in model_log.read_text(errors="replace").splitlines()
                if re.search(r"\b\w*(Error|Exception): ", ln)
            ]
            if errors:
                parts.append("worker error: " + errors[-1].split("MODEL_LOG - ", 1)[-1])
        for name in ("model_log.log", "ts_log.log"):
            path = self.logs / name
            if path.exists():
                text = path.read_text(errors="replace").splitlines()[-lines:]
                parts.append(f"--- last lines of {path} ---\n" + "\n".join(text))
        out = self.run_dir / "torchserve.out"
        if not parts and out.exists():
            parts.append(f"--- {out} ---\n" + "\n".join(out.read_text(errors="replace").splitlines()[-lines:]))
        return "\n".join(parts) or f"(no TorchServe log under {self.logs})"

    def stop(self, grace_s: float = 20.0) -> None:
        if self.pgid is not None:
            stop_group(self.pgid, grace_s)
        if self.proc is not None:
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        self.key_file.unlink(missing_ok=True)


def java_version() -> int | None:
    """Major version of ``java`` on PATH (or $JAVA_HOME), None when there is none."""
    java = os.path.join(os.environ["JAVA_HOME"], "bin", "java") if os.environ.get("JAVA_HOME") else "java"
    try:
        out = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    m = re.search(r'version "(\d+)', out.stderr + out.stdout)
    return int(m.group(1)) if m else None
