"""Soak test of the real service: client_infer.py (tiny model, free ports) under parallel load, a burst past
the queue's bound, a killed worker, TorchServe stopped under a running proxy, and 50 sequential requests
(worker memory, temp files).

Prints a markdown table (case | requests | passed | p50 s | p95 s) and writes it to bench/results/soak.md.
Every loop is bounded in count and time; everything it starts is stopped on exit; all traffic stays on
127.0.0.1. Run from the repository root: `make soak` (= python -m bench.soak).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import signal
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import requests

from common.files import atomic_write_text
from common.paths import ROOT
from model.checkpoint import save_checkpoint
from model.frvsr import FRVSR, FRVSRConfig
from proxy.app import serve
from proxy.backend import TorchServeBackend
from proxy.run import proxy_config
from serving.torchserve import free_port, group_members
from testing.clips import make_video
from testing.launcher import ServiceProcess, wait_healthy
from wire.contract import HEALTH_PATH, PREDICT_PATH
from wire.limits import Limits

START_TIMEOUT_S = 240
REQUEST_TIMEOUT_S = 300
MODEL_NAME = "tiny"  # the served model (client_infer.py names it after its checkpoint, tiny.pth)
SOAK_RESPONSE_TIMEOUT_S = 120  # client_infer.py --response_timeout: seconds per clip


@dataclass
class Case:
    """One row of the table: how many requests, how many behaved as required, their latencies."""

    name: str
    requests: int = 0
    passed: int = 0
    seconds: list[float] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def record(self, ok: bool, seconds: float, note: str | None = None) -> None:
        self.requests += 1
        self.passed += bool(ok)
        self.seconds.append(seconds)
        if note and len(self.notes) < 6:
            self.notes.append(note)

    def fail(self, note: str) -> None:
        """The case fails as a whole (a check beyond the single requests)."""
        self.passed = min(self.passed, self.requests - 1)
        self.notes.append("FAILED: " + note)

    def row(self) -> str:
        s = sorted(self.seconds)
        p50 = statistics.median(s) if s else float("nan")
        p95 = s[min(len(s) - 1, int(round(0.95 * (len(s) - 1))))] if s else float("nan")
        return f"| {self.name} | {self.requests} | {self.passed} | {p50:.2f} | {p95:.2f} |"


def post(url: str, payload: dict) -> tuple[requests.Response | None, float]:
    t0 = time.perf_counter()
    try:
        r = requests.post(url + PREDICT_PATH, json=payload, timeout=REQUEST_TIMEOUT_S)
    except requests.RequestException:
        r = None
    return r, time.perf_counter() - t0


def b64_payload(video: bytes) -> dict:
    return {"content": base64.b64encode(video).decode()}


def is_envelope(r: requests.Response | None, status_range: range) -> bool:
    if r is None or r.status_code not in status_range:
        return False
    try:
        body = r.json()
    except ValueError:
        return False
    return body.get("code") == r.status_code and isinstance(body.get("msg"), str)


def describe(r: requests.Response | None) -> str:
    if r is None:
        return "no answer"
    try:
        return f"{r.status_code} {r.json().get('msg', '')[:110]}"
    except ValueError:
        return f"{r.status_code} (not JSON)"


def answers_alone(svc: ServiceProcess, payloads: list[dict]) -> list[str]:
    """Each payload's answer sent alone (the reference every parallel answer must equal)."""
    out = []
    for p in payloads:
        r, _ = post(svc.url, p)
        if r is None or r.status_code != 200:
            raise SystemExit(f"reference request failed: {describe(r)}")
        out.append(r.json()["data"]["content"])
    return out


def at_once(n: int, fn) -> list:
    """Run ``fn(i)`` for i < n in n threads released together by a barrier; results in order."""
    barrier = threading.Barrier(n)

    def go(i: int):
        barrier.wait(timeout=60)
        return fn(i)

    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(go, range(n)))


# ----------------------------------------------------------------------------- cases


def parallel_clients(svc: ServiceProcess, clients: int, per_client: int, clips: list[bytes], name: str) -> Case:
    """``clients`` clients at once, ``per_client`` requests each, over ``clips``: every answer must be 200 and
    equal that clip's answer sent alone (no retries: requests beyond the workers wait in the proxy's queue)."""
    case = Case(name)
    payloads = [b64_payload(c) for c in clips]
    alone = answers_alone(svc, payloads)

    def client(c: int) -> list[tuple[bool, float, str | None]]:
        out = []
        for k in range(per_client):
            i = (c + k) % len(payloads)
            r, s = post(svc.url, payloads[i])
            ok = r is not None and r.status_code == 200 and r.json()["data"]["content"] == alone[i]
            out.append((ok, s, None if ok else f"client {c} request {k}: {describe(r)}"))
        return out

    for results in at_once(clients, client):
        for ok, s, note in results:
            case.record(ok, s, note)
    if case.passed == case.requests:
        case.notes.append(
            f"all {case.requests} answers 200 and identical to the same request sent alone, without retries"
        )
    return case


def overload(svc: ServiceProcess, clients: int, clip: bytes) -> Case:
    """More clients at once than the queue holds: each gets either the right 200 or a clean 503 "queue is
    full" with a Retry-After; at least one of each; the service is healthy after and serves the next request."""
    case = Case(f"overload: {clients} at once past the queue bound")
    payload = b64_payload(clip)
    alone = answers_alone(svc, [payload])[0]
    results = at_once(clients, lambda i: post(svc.url, payload))
    served = refused = 0
    retry_after = []
    for r, s in results:
        if r is not None and r.status_code == 200:
            ok = r.json()["data"]["content"] == alone
            served += ok
            case.record(ok, s, None if ok else "a 200 with another answer's content")
        elif (
            is_envelope(r, range(503, 504))
            and "queue is full" in r.json()["msg"]
            and r.headers.get("Retry-After", "").isdigit()
        ):
            refused += 1
            retry_after.append(int(r.headers["Retry-After"]))
            case.record(
                True,
                s,
                None if refused > 1 else f"first refusal: {describe(r)} (Retry-After {r.headers['Retry-After']})",
            )
        else:
            case.record(False, s, f"unexpected: {describe(r)}")
    case.notes.append(
        f"{served} served (identical to the answer alone), {refused} refused with 503 queue full; "
        f"Retry-After {min(retry_after, default=0)}-{max(retry_after, default=0)} s"
    )
    if not served or not refused:
        case.fail("expected both served and refused requests")
    healthy = wait_healthy(svc.url, 60, svc.proc)
    r, s = post(svc.url, payload)
    ok = healthy and r is not None and r.status_code == 200 and r.json()["data"]["content"] == alone
    case.record(ok, s, f"after the burst: health {'200' if healthy else 'not 200'}, next request {describe(r)[:3]}")
    return case


def sequential_memory(svc: ServiceProcess, n: int = 50, warmup: int = 5, max_growth: float = 0.10) -> Case:
    """``n`` requests one after another: worker RSS grows <= 10 % after warm-up, no temp files are left."""
    case = Case(f"{n} sequential (RSS, temp files)")
    workers = svc.processes(worker=True)
    if len(workers) != 1:
        raise SystemExit(f"expected one worker, found {len(workers)}")
    worker = workers[0]
    tmpdir = worker.environ().get("TMPDIR", "/tmp")
    worker_tmp = Path(tmpdir)
    before_worker_tmp = {p for p in worker_tmp.rglob("*")}
    before_tmp = set(os.listdir("/tmp"))
    payload = b64_payload(make_video("avi_mjpeg", frames=10, width=64, height=48))
    base_rss = None
    for i in range(n):
        r, s = post(svc.url, payload)
        case.record(
            r is not None and r.status_code == 200,
            s,
            None if r is not None and r.status_code == 200 else f"request {i}: {None if r is None else r.status_code}",
        )
        if i + 1 == warmup:
            base_rss = worker.memory_info().rss
    final_rss = worker.memory_info().rss
    growth = final_rss / base_rss - 1
    left_worker_tmp = sorted(str(p) for p in set(worker_tmp.rglob("*")) - before_worker_tmp)
    new_tmp = sorted(set(os.listdir("/tmp")) - before_tmp)
    case.notes.append(
        f"worker RSS {base_rss / 2**20:.0f} -> {final_rss / 2**20:.0f} MiB ({growth:+.1%}, limit +{max_growth:.0%})"
    )
    case.notes.append(
        f"worker TMPDIR={tmpdir}: {len(left_worker_tmp)} new entries {left_worker_tmp[:3]}; "
        f"/tmp: {len(new_tmp)} new entries during the run (shared machine, any owner) {new_tmp[:3]}"
    )
    if growth > max_growth or left_worker_tmp:
        case.fail("memory growth or temp files left")
    return case


def killed_worker(svc: ServiceProcess, restart_timeout_s: float = 120) -> Case:
    """kill -9 the worker during a request: that request gets a clean 5xx, TorchServe restarts the worker,
    the next request succeeds."""
    case = Case("kill -9 worker mid-request")
    payload = b64_payload(make_video("avi_mjpeg", frames=60, width=160, height=120, fps=15))  # several seconds of work
    result: dict = {}
    t = threading.Thread(target=lambda: result.update(zip(("r", "s"), post(svc.url, payload), strict=True)))
    t.start()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # wait until the worker is busy on it
        h = requests.get(svc.url + HEALTH_PATH, timeout=10).json()
        if h["data"].get("inflight", 0) >= 1:
            break
        time.sleep(0.1)
    time.sleep(1.0)
    victim = svc.processes(worker=True)
    killed = None
    if victim:
        killed = victim[0].pid
        os.kill(killed, signal.SIGKILL)
    t.join(REQUEST_TIMEOUT_S + 10)
    r = result.get("r")
    ok = killed is not None and is_envelope(r, range(500, 600))
    case.record(
        ok,
        result.get("s", float("nan")),
        f"in-flight answer: {describe(r)}",
    )
    t0 = time.perf_counter()
    healthy = wait_healthy(svc.url, restart_timeout_s, svc.proc)
    case.notes.append(
        f"healthy again after {time.perf_counter() - t0:.1f} s; new worker pid "
        f"{[p.pid for p in svc.processes(worker=True)]} (killed {killed})"
    )
    r, s = post(svc.url, b64_payload(make_video("avi_mjpeg", frames=6)))
    case.record(
        healthy and r is not None and r.status_code == 200, s, f"next request: {None if r is None else r.status_code}"
    )
    return case


@contextmanager
def proxy_in_front_of(svc: ServiceProcess, key_file: Path, port: int) -> Iterator[str]:
    """A second proxy on ``port`` in front of ``svc``'s TorchServe, built as ``serving.service.run`` builds its own
    (``proxy.run.proxy_config``, ``TorchServeBackend``, ``proxy.app.serve``) with ``svc``'s limits and
    response timeout, on an event loop in a thread of this process; yields its URL and stops it on exit."""
    cfg = proxy_config(Limits(), SOAK_RESPONSE_TIMEOUT_S, workers=1)
    backend = TorchServeBackend(
        MODEL_NAME,
        f"http://127.0.0.1:{svc.ports['inference_port']}",
        f"http://127.0.0.1:{svc.ports['management_port']}",
        key_file,
        connections=max(8, 2 * cfg.max_inflight),
    )
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="soak-proxy", daemon=True)
    thread.start()
    try:
        runner = asyncio.run_coroutine_threadsafe(serve(cfg, backend, "127.0.0.1", port), loop).result(60)
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(30)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(30)
        loop.close()


def torchserve_stopped(svc: ServiceProcess, work: Path) -> Case:
    """A proxy keeps running while TorchServe dies: the route answers 503 at once, /health says TorchServe is
    unreachable. (client_infer.py itself shuts down when its TorchServe dies: it is checked too.)"""
    case = Case("TorchServe stopped under the proxy")
    key_copy = work / "key_file.json"
    key_copy.write_bytes((svc.run_dir / "key_file.json").read_bytes())  # client_infer deletes its own on exit
    with proxy_in_front_of(svc, key_copy, free_port()) as url:
        if not wait_healthy(url, 60):
            raise SystemExit("the second proxy did not become healthy")
        jvm = svc.processes(worker=False)
        pgid = svc.pgid()
        for p in jvm:
            p.kill()  # TorchServe crashes
        psutil.wait_procs(jvm, timeout=30)
        payload = b64_payload(make_video("avi_mjpeg", frames=4))
        for _ in range(5):
            r, s = post(url, payload)
            case.record(
                is_envelope(r, range(503, 504)) and s < 5.0,
                s,
                f"predict: {None if r is None else r.status_code} {'' if r is None else r.json()['msg'][:90]}",
            )
        t0 = time.perf_counter()
        h = requests.get(url + HEALTH_PATH, timeout=30)
        s = time.perf_counter() - t0
        d = h.json()
        case.record(
            h.status_code == 503 and d["data"]["torchserve"] == "unreachable" and s < 15,
            s,
            f"health: {h.status_code} {d['msg'][:90]}",
        )
        code = svc.proc.wait(timeout=60)  # the supervisor notices within ~2 s and stops everything
        left = group_members(pgid) if pgid else []
        case.notes.append(
            f"client_infer.py exited with {code} after TorchServe died; {len(left)} processes left in its group"
        )
        if left:
            case.fail("TorchServe processes left behind")
    return case


# ----------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "soak.md")
    a = p.parse_args(argv)
    cases: list[Case] = []
    with tempfile.TemporaryDirectory(prefix="frvsr-soak-") as tmp:
        work = Path(tmp)
        save_checkpoint(work / f"{MODEL_NAME}.pth", FRVSR(FRVSRConfig(channels=8, blocks=1, fnet_channels=4)))
        svc = ServiceProcess(
            work, f"{MODEL_NAME}.pth", work, name="soak", extra=["--response_timeout", str(SOAK_RESPONSE_TIMEOUT_S)]
        )
        t0 = time.perf_counter()
        try:
            svc.start(START_TIMEOUT_S)
            print(f"service up in {time.perf_counter() - t0:.1f} s at {svc.url}", flush=True)
            six = make_video(
                "mp4_h264", frames=20, width=176, height=144, fps=30
            )  # the burst: one clip, 6 clients
            small = [make_video("avi_mjpeg", frames=8 + i, width=48 + 8 * i, height=32) for i in range(4)]
            runs = [
                lambda: parallel_clients(svc, 6, 1, [six], "6 parallel clients, same 20-frame 176x144 clip"),
                lambda: parallel_clients(svc, 16, 2, small, "burst: 16 parallel clients x 2"),
                lambda: overload(svc, 60, make_video("avi_mjpeg", frames=20, width=96, height=64)),
                lambda: sequential_memory(svc),
                lambda: killed_worker(svc),
                lambda: torchserve_stopped(svc, work),
            ]
            for run in runs:
                cases.append(run())
                print(cases[-1].row(), flush=True)
        finally:
            svc.stop()
    lines = ["| case | requests | passed | p50 s | p95 s |", "|---|---|---|---|---|"] + [c.row() for c in cases]
    notes = [f"- {c.name}: {n}" for c in cases for n in c.notes]
    text = "\n".join(lines) + "\n\n" + "\n".join(notes) + "\n"
    print("\n" + text)
    atomic_write_text(a.out, text)
    return 0 if all(c.passed == c.requests for c in cases) else 1


if __name__ == "__main__":
    sys.exit(main())
