"""The proxy as a running process: serve until SIGINT/SIGTERM (or until the model server dies), and the
proxy-only mode in front of a KServe predictor, which needs nothing but this package and ``wire``:

    python -m proxy --kserve_url http://frvsr-predictor.frvsr.svc.cluster.local/v1/models/frvsr

``serving.service`` runs the same loop in front of the TorchServe it started (``client_infer.py``).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from proxy.app import ProxyConfig, serve
from proxy.backend import Backend, KServeBackend
from wire.cost import request_timeout
from wire.limits import Limits

log = logging.getLogger(__name__)

KSERVE_CLIP_TIMEOUT = 600  # s per clip without --response_timeout: the predictor timeout in deploy/kserve/


class StartupError(RuntimeError):
    """A problem the user can fix (missing file, port taken, no Java, no GPU); the message says how."""


# ----------------------------------------------------------------------------- queue arithmetic


def inflight(max_inflight: int, workers: int) -> int:
    """Requests handed to the model server at once: ``max_inflight``, or 0 = workers + 1 (the next body is
    there when a worker frees; within TorchServe's job_queue_size of 8 per model)."""
    return max_inflight or workers + 1


def proxy_config(
    limits: Limits,
    response_timeout: float,
    workers: int,
    max_inflight: int = 0,
    max_queued: int = ProxyConfig.max_queued,
    max_queued_bytes: int = ProxyConfig.max_queued_bytes,
    clip_seconds_hint: float = ProxyConfig.clip_seconds_hint,
    frame_cost_hint: tuple[float, float] | None = None,
    models: dict | None = None,
) -> ProxyConfig:
    """The proxy's settings for a model server with ``workers`` parallel clips at ``limits`` (and the other
    served models' lanes, ``models``); the time limit per request is ``wire.cost.request_timeout``'s."""
    n = inflight(max_inflight, workers)
    return ProxyConfig(
        max_body_bytes=limits.max_body_bytes(),
        timeout_s=request_timeout(response_timeout, n, max_queued, workers),
        max_inflight=n,
        max_queued=max_queued,
        max_queued_bytes=max_queued_bytes,
        workers=workers,
        clip_seconds_hint=clip_seconds_hint,
        limits={**asdict(limits), "max_body_bytes": limits.max_body_bytes()},
        frame_cost_hint=frame_cost_hint,
        models=dict(models or {}),
    )


# ----------------------------------------------------------------------------- signals and the loop


class Interrupted(Exception):
    """SIGINT/SIGTERM arrived during start-up."""


class SignalGuard:
    """SIGINT/SIGTERM during start-up raise ``Interrupted`` (so ``finally`` cleans up); later they set an event."""

    def __init__(self):
        self._old = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
        for s in self._old:
            signal.signal(s, self._raise)

    @staticmethod
    def _raise(signum, frame):
        raise Interrupted()

    def to_event(self, loop: asyncio.AbstractEventLoop, event: asyncio.Event) -> None:
        for s in self._old:
            loop.add_signal_handler(s, event.set)

    def hold(self, message: str) -> None:
        """Clean-up has begun: a second signal only logs ``message``."""
        for s in self._old:
            signal.signal(s, lambda *_: log.warning(message))

    def restore(self) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)


async def serve_until_stopped(
    cfg: ProxyConfig,
    backend: Backend,
    host: str,
    port: int,
    guard: SignalGuard,
    on_ready: Callable[[], None] | None = None,
    died: Callable[[], int | None] = lambda: None,
) -> int:
    """Run the proxy in front of ``backend`` until a signal (exit code 0), or until ``died()`` returns one."""
    stop = asyncio.Event()
    guard.to_event(asyncio.get_running_loop(), stop)
    try:
        runner = await serve(cfg, backend, host, port)
    except OSError as e:
        raise StartupError(
            f"the proxy cannot listen on {host}:{port} ({e.strerror or e}); choose another --service_port"
        ) from None
    code = None
    try:
        if on_ready:
            on_ready()
        while not stop.is_set() and code is None:
            try:
                await asyncio.wait_for(stop.wait(), timeout=2.0)
            except TimeoutError:
                pass
            code = died()
    finally:
        await runner.cleanup()
    return code or 0


# ----------------------------------------------------------------------------- the proxy in front of KServe


@dataclass(frozen=True)
class KServeProxyOptions:
    """The proxy-only mode's settings (``client_infer.py --kserve_url`` and ``python -m proxy``)."""

    kserve_url: str | tuple[str, ...]  # several: the first is the default model, the others are picked by name
    kserve_token_file: Path | None = None
    host: str = "127.0.0.1"
    service_port: int = 8080
    workers: int = 1  # clips the cluster processes at once (replicas x workers per replica)
    limits: Limits = field(default_factory=Limits)
    response_timeout: int | None = None  # None: KSERVE_CLIP_TIMEOUT
    max_inflight: int = 0
    max_queued: int = ProxyConfig.max_queued
    max_queued_bytes: int = ProxyConfig.max_queued_bytes


def run_kserve_proxy(opts: KServeProxyOptions, on_ready: Callable[[dict], None] | None = None) -> int:
    """Serve only the proxy, in front of the KServe predictor at ``opts.kserve_url``; blocks until interrupted.

    Nothing local is started or checked (no checkpoint, Java or TorchServe): the model runs in the cluster.
    """
    if opts.kserve_token_file is not None and not Path(opts.kserve_token_file).is_file():
        raise StartupError(
            f"--kserve_token_file {opts.kserve_token_file} does not exist; give the file holding the bearer token"
        )
    n = inflight(opts.max_inflight, opts.workers)
    try:
        backend = KServeBackend(opts.kserve_url, opts.kserve_token_file, connections=max(8, 2 * n))
    except ValueError as e:
        raise StartupError(str(e)) from None
    response_timeout = int(opts.response_timeout or KSERVE_CLIP_TIMEOUT)
    cfg = proxy_config(
        opts.limits, response_timeout, opts.workers, opts.max_inflight, opts.max_queued, opts.max_queued_bytes
    )
    info = {
        "url": f"http://{display_host(opts.host)}:{opts.service_port}",
        "kserve_url": backend.url,
        "model": backend.model,
        "workers": opts.workers,
        "response_timeout": response_timeout,
        "proxy_timeout": cfg.timeout_s,
        "limits": opts.limits,
        "queue": (cfg.max_inflight, cfg.max_queued, cfg.max_queued_bytes),
    }
    guard = SignalGuard()
    ready = (lambda: on_ready(info)) if on_ready else None
    try:
        return asyncio.run(serve_until_stopped(cfg, backend, opts.host, opts.service_port, guard, ready))
    except Interrupted:
        return 0
    finally:
        guard.restore()


def display_host(host: str) -> str:
    return "127.0.0.1" if host in ("0.0.0.0", "") else host


def print_kserve_banner(info: dict) -> None:
    lim, url = info["limits"], info["url"]
    inflight_n, queued, queued_bytes = info["queue"]
    print(
        f"""
FRVSR 4x video super-resolution: the proxy in front of KServe.
  predictor   {info["kserve_url"]}  (v1 protocol; model {info["model"]})
  web page    {url}/
  endpoint    POST {url}/autotable/predict      health: GET {url}/health (the predictor's model-ready state)
  queue       {inflight_n} at a time to the predictor, then up to {queued} waiting ({queued_bytes / 2**20:.0f} MiB)
  limits      {lim.max_pixels} pixels/frame, {lim.max_seconds:g} s, {lim.max_frames} frames; \
{info["response_timeout"]} s per clip, {info["proxy_timeout"]:.0f} s per request with its wait

Ctrl-C stops the proxy (the predictor keeps running).""",
        flush=True,
    )


def add_limit_args(p: argparse.ArgumentParser) -> None:
    """The request limits as options, defaults from ``wire.limits.Limits`` (also used by client_infer.py)."""
    d = Limits()
    g = p.add_argument_group("limits per request (defaults: the platform spec)")
    g.add_argument(
        "--max_pixels", type=int, default=d.max_pixels, help=f"frame area width*height (default {d.max_pixels})"
    )
    g.add_argument(
        "--max_seconds", type=float, default=d.max_seconds, help=f"clip duration (default {d.max_seconds:g})"
    )
    g.add_argument("--max_frames", type=int, default=d.max_frames, help=f"frames per clip (default {d.max_frames})")
    g.add_argument(
        "--max_output_mb", type=float, default=d.max_output_bytes / 2**20,
        help=f"encoded 4x video size in MiB (default {d.max_output_bytes / 2**20:g})",
    )  # fmt: skip


def limits_from(args: argparse.Namespace) -> Limits:
    return Limits(args.max_pixels, args.max_seconds, args.max_frames, int(args.max_output_mb * 2**20))


def add_queue_args(p: argparse.ArgumentParser) -> None:
    """The proxy's queue as options, defaults from ``ProxyConfig`` (also used by client_infer.py)."""
    g = p.add_argument_group("the proxy's queue")
    g.add_argument(
        "--max_inflight", type=int, default=0,
        help="requests handed to the model server at once; the rest wait in the proxy's queue "
        "(default 0 = workers + 1)",
    )  # fmt: skip
    g.add_argument(
        "--max_queued", type=int, default=ProxyConfig.max_queued,
        help="requests that may wait in the queue, in arrival order; more get 503 with Retry-After "
        f"(default {ProxyConfig.max_queued})",
    )  # fmt: skip
    g.add_argument(
        "--max_queued_mb", type=float, default=ProxyConfig.max_queued_bytes / 2**20,
        help=f"MiB of request bodies that may wait in the queue (default {ProxyConfig.max_queued_bytes / 2**20:g})",
    )  # fmt: skip


def add_kserve_args(p: argparse.ArgumentParser, required: bool) -> None:
    g = p.add_argument_group("KServe (docs/deploy.md)")
    g.add_argument(
        "--kserve_url", default=None, required=required, nargs="+", metavar="URL",
        help="serve only the proxy (page and /autotable/predict), in front of a KServe predictor speaking the v1 "
        "protocol: http(s)://<host>/v1/models/<name> (several: the first is the default, a request names "
        "another with \"model\": <name>); --workers is then the clips the cluster runs at once "
        "(replicas x workers per replica) and --response_timeout the predictor's timeout "
        f"(default {KSERVE_CLIP_TIMEOUT})",
    )  # fmt: skip
    g.add_argument(
        "--kserve_token_file", default=None,
        help="with --kserve_url: a file holding a bearer token sent as Authorization (re-read when it changes)",
    )  # fmt: skip


def kserve_options(args: argparse.Namespace) -> KServeProxyOptions:
    """The parsed options of either command line -> the proxy-only mode's settings."""
    counts = {"workers": max(1, args.workers), "max_inflight": max(0, args.max_inflight)}
    counts["max_queued"] = max(0, args.max_queued)
    known = {f.name for f in fields(KServeProxyOptions)} - {"limits", "kserve_token_file", "max_queued_bytes", *counts}
    return KServeProxyOptions(
        **{k: getattr(args, k) for k in known - {"kserve_url"}},
        kserve_url=tuple(args.kserve_url) if isinstance(args.kserve_url, list) else args.kserve_url,
        **counts,
        kserve_token_file=Path(args.kserve_token_file) if args.kserve_token_file else None,
        limits=limits_from(args),
        max_queued_bytes=int(args.max_queued_mb * 2**20),
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """``python -m proxy``'s command line (the proxy-only mode's options, as ``client_infer.py`` spells them)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1; 0.0.0.0 in a container)")
    p.add_argument("--service_port", type=int, default=8080, help="port of the /autotable/predict proxy (default 8080)")
    p.add_argument("--workers", type=int, default=1, help="clips the cluster processes at once (default 1)")
    p.add_argument("--response_timeout", type=int, default=None, help="seconds per clip (default 600)")
    add_kserve_args(p, required=True)
    add_limit_args(p)
    add_queue_args(p)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return run_kserve_proxy(kserve_options(args), on_ready=print_kserve_banner)
    except (StartupError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
