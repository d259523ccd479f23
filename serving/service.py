"""What ``client_infer.py`` does, as functions: checks, .mar, TorchServe, proxy, clean shutdown.

``run(opts)`` blocks until Ctrl-C/SIGTERM (or TorchServe dies) and always stops what it started: the
proxy, the TorchServe JVM and its Python workers (one process group, see serving.torchserve).
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import signal
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from pathlib import Path

import psutil

from handler.settings import EncoderSettings, HandlerSettings, Limits, resolve_device, threads_per_worker
from serving import archive
from serving.contract import request_limit_bytes, response_limit_bytes
from serving.torchserve import (
    Ports,
    RunState,
    ServeError,
    TorchServe,
    check_ports,
    free_port,
    java_version,
    kserve_overrides,
    port_is_free,
    run_overrides,
    stop_leftovers,
    write_properties,
)

log = logging.getLogger(__name__)

ROOT = archive.ROOT
JAVA_HINT = "install it, e.g. `sudo apt-get install -y openjdk-17-jre-headless` (Debian/Ubuntu), then run again"


@dataclass
class ServeOptions:
    checkpoint: Path | None  # None only with kserve_url (the model runs in the cluster)
    model_name: str
    version: str = "1.0"
    device: str = "cpu"
    host: str = "127.0.0.1"
    ports: Ports = field(default_factory=Ports)
    workers: int = 1
    limits: Limits = field(default_factory=Limits)
    encoder: EncoderSettings = field(default_factory=EncoderSettings)
    torch_threads: int = 0
    precision: str = "auto"  # handler precision (model.inference.PRECISIONS)
    response_timeout: int | None = None  # None: measured
    startup_timeout: float = 180.0
    max_inflight: int = (
        0  # requests handed to TorchServe at once; 0: workers + 1 (the next body is there when a worker frees)
    )
    max_queued: int = 32  # requests waiting in the proxy beyond those; more get 503 with Retry-After
    max_queued_bytes: int = 512 * 2**20  # and at most this many bytes of request bodies waiting
    run_dir: Path | None = None
    model_store: Path = ROOT / "model_store"
    config_template: Path = ROOT / "config.properties"
    kserve_url: str | None = None  # serve only the proxy, in front of this KServe predictor (run_kserve_proxy)
    kserve_token_file: Path | None = None  # bearer token for it


class StartupError(RuntimeError):
    """A problem the user can fix (missing file, port taken, no Java, no GPU); the message says how."""


# ----------------------------------------------------------------------------- checks


def resolve_checkpoint(model_path: str, used_model: str) -> Path:
    """``--model_path`` (folder or file) + ``--used_model`` (file name) -> an existing checkpoint path."""
    for base in (Path.cwd(), ROOT):  # relative paths: from here, else from the repository root
        p = base / model_path
        ckpt = p if p.is_file() else p / used_model
        if ckpt.is_file():
            return ckpt.resolve()
    ckpt = Path(model_path) / used_model
    found = sorted((ROOT / "runs" / "models").glob("*/*.pth"), key=lambda q: q.stat().st_mtime, reverse=True)[:3]
    example = (
        "\n  trained models found:\n" + "\n".join(f"    --model_path {q.parent}/ --used_model {q.name}" for q in found)
        if found
        else "\n  e.g. --model_path runs/models/<uuid>/ --used_model FRVSR_GAN_<trial>.pth (written by client_train.py)"
    )
    raise StartupError(
        f"model checkpoint not found: {ckpt}. "
        "(The shipped default model lives at model/pretrained/FRVSR_GAN_default.pth "
        f"once it is published.) Pass --model_path and --used_model to serve another model.{example}"
    )


def check_device(device: str) -> None:
    try:
        resolve_device(device)
    except ValueError as e:
        raise StartupError(str(e)) from None


def check_java() -> None:
    v = java_version()
    if v is None:
        raise StartupError(f"TorchServe needs Java >= 17 and `java` was not found; {JAVA_HINT}")
    if v < 17:
        raise StartupError(f"TorchServe needs Java >= 17, found Java {v}; {JAVA_HINT}")


def seconds_per_frame(checkpoint: Path, device: str, limits: Limits, threads: int, precision: str = "auto") -> float:
    """Model time for one frame of the largest accepted area (square), after a warm-up frame."""
    import numpy as np
    import torch

    from model.checkpoint import load_checkpoint
    from model.inference import time_super_resolve

    side = max(8, int(math.sqrt(limits.max_pixels)))
    prev = torch.get_num_threads()
    torch.set_num_threads(max(1, threads))
    try:
        model, _ = load_checkpoint(checkpoint, device)
        frames = [np.random.default_rng(i).integers(0, 256, (side, side, 3), dtype=np.uint8) for i in range(3)]
        return time_super_resolve(model, frames, device=device, precision=precision) / (len(frames) - 1)
    finally:
        torch.set_num_threads(prev)
        if device.startswith("cuda"):
            torch.cuda.empty_cache()  # the worker, not this process, needs the GPU memory


def pick_grpc_ports(ports: Ports) -> Ports:
    """gRPC is unused: keep 7070/7071 when free, otherwise any free ports (never a reason to fail)."""
    gi = ports.grpc_inference if port_is_free(ports.grpc_inference) else free_port()
    gm = ports.grpc_management if port_is_free(ports.grpc_management) and ports.grpc_management != gi else free_port()
    return replace(ports, grpc_inference=gi, grpc_management=gm)


def default_run_dir() -> Path:
    return ROOT / "runs" / "serve" / f"{datetime.now():%Y%m%d-%H%M%S}-{os.getpid()}"


# ----------------------------------------------------------------------------- build


def build_archive(opts: ServeOptions, work_dir: Path, response_timeout: int) -> Path:
    settings = HandlerSettings(
        limits=opts.limits, encoder=opts.encoder, torch_threads=opts.torch_threads, precision=opts.precision
    )
    model_config = archive.write_model_config(work_dir / "model-config.yaml", settings, opts.workers, response_timeout)
    return archive.build_mar(opts.checkpoint, opts.model_name, opts.model_store, model_config, work_dir, opts.version)


def plan_timeout(opts: ServeOptions) -> tuple[int, float | None]:
    """(``responseTimeout`` for one clip, model seconds for a clip at the limits or None when not measured):
    the option, else measured from one frame at the limits."""
    if opts.response_timeout:
        return int(opts.response_timeout), None
    spf = seconds_per_frame(
        opts.checkpoint, opts.device, opts.limits, threads_per_worker(opts.torch_threads, opts.workers), opts.precision
    )
    timeout = archive.estimate_response_timeout(spf, HandlerSettings(limits=opts.limits))
    log.info("model: %.3f s per %d-pixel frame -> responseTimeout %d s", spf, opts.limits.max_pixels, timeout)
    return timeout, spf * opts.limits.max_frames


def inflight(opts: ServeOptions) -> int:
    """Requests the proxy hands to TorchServe at once (within TorchServe's job_queue_size of 8 per model)."""
    return opts.max_inflight or opts.workers + 1


def request_timeout(opts: ServeOptions, response_timeout: int) -> float:
    """The proxy's limit for one request from its arrival: every request ahead of it in the proxy's and
    TorchServe's queues, and its own clip, at the worst-case ``responseTimeout`` each, + 30 s."""
    return float(response_timeout * math.ceil((inflight(opts) + opts.max_queued) / opts.workers) + 30)


# ----------------------------------------------------------------------------- run


def run(opts: ServeOptions, on_ready=None) -> int:
    """Serve until interrupted. ``on_ready(info: dict)`` is called once everything answers (prints the banner)."""
    check_device(opts.device)
    check_java()
    run_dir = Path(opts.run_dir or default_run_dir()).resolve()
    runs_root = run_dir.parent
    for stopped in stop_leftovers(runs_root):
        log.warning("stopped a TorchServe left over by an earlier run in %s", stopped)
    check_ports(opts.ports, runs_root)
    ports = pick_grpc_ports(opts.ports)
    run_dir.mkdir(parents=True, exist_ok=True)

    response_timeout, clip_seconds = plan_timeout(opts)
    mar = build_archive(opts, run_dir, response_timeout)
    overrides = run_overrides(
        ports, opts.model_store, request_limit_bytes(opts.limits), response_limit_bytes(opts.limits)
    )
    overrides["number_of_gpu"] = "1" if opts.device.startswith("cuda") else "0"
    overrides["default_workers_per_model"] = str(opts.workers)
    config = write_properties(opts.config_template, run_dir / "config.properties", overrides)

    ts = TorchServe(run_dir, config, opts.model_store, ports, env=_worker_env(opts))
    me = psutil.Process()
    state = RunState(
        owner_pid=me.pid, owner_started=me.create_time(), ts_pgid=None, ports=asdict(ports), run_dir=str(run_dir)
    )
    stop_signals = _SignalGuard()
    try:
        ts.start()
        state.ts_pgid = ts.pgid
        state.save()
        ts.wait_up(min(opts.startup_timeout, 120))
        ts.register(mar.name, opts.workers, opts.startup_timeout)
        described = ts.wait_ready(opts.model_name, opts.startup_timeout)
        proxy_timeout = request_timeout(opts, response_timeout)
        info = {
            "url": f"http://{_display_host(opts.host)}:{ports.service}",
            "model": opts.model_name,
            "version": described.get("modelVersion"),
            "checkpoint": str(opts.checkpoint),
            "device": opts.device,
            "workers": opts.workers,
            "ports": ports,
            "run_dir": str(run_dir),
            "response_timeout": response_timeout,
            "proxy_timeout": proxy_timeout,
            "limits": opts.limits,
            "mar": str(mar),
            "queue": (inflight(opts), opts.max_queued, opts.max_queued_bytes),
            "clip_seconds_hint": clip_seconds or 10.0,
        }
        from proxy.backend import TorchServeBackend

        backend = TorchServeBackend(
            opts.model_name,
            ts.inference_url,
            ts.management_url,
            ts.key_file,
            connections=max(8, 2 * inflight(opts)),
        )

        def torchserve_died() -> int | None:
            if ts.proc is not None and ts.proc.poll() is not None:
                log.error(
                    "TorchServe exited unexpectedly (code %s); shutting down.\n%s", ts.proc.returncode, ts.log_tail()
                )
                return 1
            return None

        return asyncio.run(
            _serve_proxy(opts, backend, ports.service, proxy_timeout, info, on_ready, stop_signals, torchserve_died)
        )
    except _Interrupted:
        return 0
    finally:
        stop_signals.hold()  # a second Ctrl-C must not cut the clean-up short
        log.info("stopping TorchServe (process group %s)", ts.pgid)
        ts.stop()
        state.ts_pgid = None
        if run_dir.exists():
            state.save()
        stop_signals.restore()


def _worker_env(opts: ServeOptions) -> dict:
    # OpenMP threads that spin while waiting steal the cores the decode/encode threads need
    env = {"OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE")}
    if opts.device.startswith("cuda:"):
        env["CUDA_VISIBLE_DEVICES"] = opts.device.split(":", 1)[1]
    return env


def _display_host(host: str) -> str:
    return "127.0.0.1" if host in ("0.0.0.0", "") else host


async def _serve_proxy(
    opts: ServeOptions,
    backend,
    port: int,
    timeout_s: float,
    info: dict,
    on_ready,
    guard: _SignalGuard,
    died: Callable[[], int | None] = lambda: None,
) -> int:
    """Run the proxy in front of ``backend`` until a signal, or until ``died()`` returns an exit code."""
    from proxy.app import ProxyConfig, serve

    cfg = ProxyConfig(
        max_body_bytes=request_limit_bytes(opts.limits),
        timeout_s=timeout_s,
        max_inflight=inflight(opts),
        max_queued=opts.max_queued,
        max_queued_bytes=opts.max_queued_bytes,
        workers=opts.workers,
        clip_seconds_hint=info["clip_seconds_hint"],
        limits={**asdict(opts.limits), "max_body_bytes": request_limit_bytes(opts.limits)},
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    guard.to_event(loop, stop)
    try:
        runner = await serve(cfg, backend, opts.host, port)
    except OSError as e:
        raise StartupError(
            f"the proxy cannot listen on {opts.host}:{port} ({e.strerror or e}); choose another --service_port"
        ) from None
    code = 0
    try:
        if on_ready:
            on_ready(info)
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), timeout=2.0)
            except TimeoutError:
                pass
            code = died()
            if code is not None:
                break
        code = code or 0
    finally:
        await runner.cleanup()
    return code


class _Interrupted(Exception):
    pass


class _SignalGuard:
    """SIGINT/SIGTERM during start-up raise _Interrupted (so ``finally`` cleans up); later they set an event."""

    def __init__(self):
        self._old = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
        for s in self._old:
            signal.signal(s, self._raise)

    @staticmethod
    def _raise(signum, frame):
        raise _Interrupted()

    def to_event(self, loop: asyncio.AbstractEventLoop, event: asyncio.Event) -> None:
        for s in self._old:
            loop.add_signal_handler(s, event.set)

    def hold(self) -> None:
        for s in self._old:
            signal.signal(s, lambda *_: log.warning("already stopping TorchServe, please wait"))

    def restore(self) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)


# ----------------------------------------------------------------------------- KServe


@dataclass(frozen=True)
class KServeExport:
    """What ``export_kserve`` wrote: the folder to publish as the InferenceService's ``storageUri``."""

    folder: Path
    mar: Path  # folder/model-store/<name>.mar
    config: Path  # folder/config/config.properties
    response_timeout: int  # seconds TorchServe gives one clip; the InferenceService's timeout must exceed it


def export_kserve(opts: ServeOptions, folder: Path) -> KServeExport:
    """Write KServe's storage layout for the TorchServe runtime: ``model-store/<name>.mar`` (the only .mar
    there: KServe's model server refuses a folder with two) and ``config/config.properties`` (the repository's
    config.properties with :func:`serving.torchserve.kserve_overrides`)."""
    folder = Path(folder).resolve()
    if folder.exists() and not folder.is_dir():
        raise StartupError(f"--export_kserve {folder} is a file; give a folder (it gets config/ and model-store/)")
    store = folder / "model-store"
    work = (opts.run_dir or ROOT / "runs" / "export" / f"{opts.model_name}-{os.getpid()}").resolve()
    work.mkdir(parents=True, exist_ok=True)
    response_timeout, _ = plan_timeout(opts)
    for old in store.glob("*.mar"):
        old.unlink()
    mar = build_archive(replace(opts, model_store=store), work, response_timeout)
    overrides = kserve_overrides(
        opts.model_name,
        mar.name,
        opts.version,
        opts.workers,
        response_timeout,
        request_limit_bytes(opts.limits),
        response_limit_bytes(opts.limits),
        gpu=opts.device.startswith("cuda"),
    )
    config = write_properties(
        opts.config_template,
        folder / "config" / "config.properties",
        overrides,
        note="set by client_infer.py --export_kserve for KServe's TorchServe runtime (docs/deploy.md)",
    )
    return KServeExport(folder, mar, config, response_timeout)


KSERVE_CLIP_TIMEOUT = 600  # s per clip without --response_timeout: the predictor timeout in deploy/kserve/


def run_kserve_proxy(opts: ServeOptions, on_ready=None) -> int:
    """Serve only the proxy, in front of the KServe predictor at ``opts.kserve_url``; blocks until interrupted.

    Nothing local is started or checked (no checkpoint, Java or TorchServe): the model runs in the cluster.
    ``opts.workers`` is the number of clips the cluster processes at once (replicas x workers per replica).
    """
    from proxy.backend import KServeBackend

    if opts.kserve_token_file is not None and not Path(opts.kserve_token_file).is_file():
        raise StartupError(
            f"--kserve_token_file {opts.kserve_token_file} does not exist; give the file holding the bearer token"
        )
    try:
        backend = KServeBackend(opts.kserve_url, opts.kserve_token_file, connections=max(8, 2 * inflight(opts)))
    except ValueError as e:
        raise StartupError(str(e)) from None
    response_timeout = int(opts.response_timeout or KSERVE_CLIP_TIMEOUT)
    proxy_timeout = request_timeout(opts, response_timeout)
    info = {
        "url": f"http://{_display_host(opts.host)}:{opts.ports.service}",
        "kserve_url": backend.url,
        "model": backend.model,
        "workers": opts.workers,
        "response_timeout": response_timeout,
        "proxy_timeout": proxy_timeout,
        "limits": opts.limits,
        "queue": (inflight(opts), opts.max_queued, opts.max_queued_bytes),
        "clip_seconds_hint": 10.0,
    }
    guard = _SignalGuard()
    try:
        return asyncio.run(_serve_proxy(opts, backend, opts.ports.service, proxy_timeout, info, on_ready, guard))
    except _Interrupted:
        return 0
    finally:
        guard.restore()


# ----------------------------------------------------------------------------- archive only


def archive_only(opts: ServeOptions) -> Path:
    """Build ``model_store/<name>[_v<version>].mar`` without serving (to register it as another version)."""
    work = Path(opts.run_dir or ROOT / "runs" / "archive" / f"{opts.model_name}-{opts.version}-{os.getpid()}").resolve()
    work.mkdir(parents=True, exist_ok=True)
    return build_archive(opts, work, plan_timeout(opts)[0])


__all__ = [
    "ServeOptions",
    "StartupError",
    "ServeError",
    "resolve_checkpoint",
    "run",
    "archive_only",
    "export_kserve",
    "KServeExport",
    "run_kserve_proxy",
]
