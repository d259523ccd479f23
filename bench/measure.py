"""Time a clip end to end through POST /autotable/predict and split where the time goes.

    python -m serving.measure                              # tiny and 32/4/16 models, 176x144, 5 s, 30 fps
    python -m serving.measure --models mid --repeat 5 --container avi

For each model config: write a random-weight checkpoint, start client_infer.py on free ports, post the
clip ``--repeat`` times, and report client wall time, the worker's stage times (decode, model, encode;
they overlap), transport (client wall - worker total: proxy, TorchServe, base64, JSON, HTTP) and the
model alone (``super_resolve`` on the same frames in this process, same threads).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as client_infer.py sets for the workers; before torch loads

import argparse
import base64
import contextlib
import io
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import av
import numpy as np
import requests
import torch

from model.frvsr import FRVSR, FRVSRConfig, save_checkpoint, super_resolve
from serving.torchserve import free_port

ROOT = Path(__file__).resolve().parent.parent
MODELS = {
    "tiny": FRVSRConfig(channels=8, blocks=1, fnet_channels=4),
    "mid": FRVSRConfig(channels=32, blocks=4, fnet_channels=16),
}


def moving_texture(frames: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    """uint8 (t, h, w, 3): a smooth random texture panning 2 px/frame (compresses like real footage)."""
    rng = np.random.default_rng(seed)
    small = rng.random((height // 8 + 2, (width + 2 * frames) // 8 + 2, 3)).astype(np.float32)
    big = torch.nn.functional.interpolate(torch.from_numpy(small).permute(2, 0, 1)[None], scale_factor=8, mode="bicubic")[0]
    tex = (big.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    return np.stack([tex[:height, 2 * i : 2 * i + width] for i in range(frames)])


def encode(clip: np.ndarray, fps: int, container: str) -> bytes:
    buf = io.BytesIO()
    codec = {"mp4": "libx264", "avi": "mjpeg"}[container]
    with av.open(buf, "w", format=container) as c:
        s = c.add_stream(codec, rate=fps)
        s.height, s.width = clip.shape[1:3]
        s.pix_fmt = "yuvj420p" if codec == "mjpeg" else "yuv420p"
        for i, f in enumerate(clip):
            vf = av.VideoFrame.from_ndarray(f, format="rgb24")
            vf.pts = i
            c.mux(s.encode(vf))
        c.mux(s.encode(None))
    return buf.getvalue()


def model_only(cfg: FRVSRConfig | FRVSR, clip: np.ndarray, threads: int) -> float:
    """Seconds for ``super_resolve`` on ``clip`` in this process, laid out and cast as the service runs it."""
    torch.set_num_threads(threads)
    model = cfg if isinstance(cfg, FRVSR) else FRVSR(cfg)
    model = model.eval().to(memory_format=torch.channels_last)  # as load_checkpoint lays it out
    list(super_resolve(model, clip[:2]))
    t = time.perf_counter()
    for _ in super_resolve(model, clip):
        pass
    return time.perf_counter() - t


def timing(header: str) -> dict:
    return {k: float(v) for k, v in (p.split("=") for p in header.split(";") if "=" in p)}


@contextlib.contextmanager
def running_service(model_dir: Path, used_model: str, work: Path, extra: list[str], tag: str = "svc"):
    """Start client_infer.py on free ports for ``model_dir/used_model``; yield the proxy URL once healthy."""
    port = free_port()
    cmd = [sys.executable, str(ROOT / "client_infer.py"), "--model_path", str(model_dir), "--used_model", used_model,
           "--service_port", str(port), "--inference_port", str(free_port()), "--management_port", str(free_port()),
           "--metrics_port", str(free_port()), "--model_store", str(work / "store"), "--run_dir", str(work / f"run-{tag}"), *extra]
    work.mkdir(parents=True, exist_ok=True)
    log = open(work / f"client_infer-{tag}.log", "w")
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while True:
            try:
                if requests.get(url + "/health", timeout=5).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"service {tag} did not start; see {log.name}")
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=120)
        log.close()


def measure(name: str, clip: np.ndarray, video: bytes, repeat: int, work: Path, extra: list[str], model: FRVSR | None = None) -> dict:
    """``model``: serve these weights (e.g. a trained checkpoint) instead of a fresh ``MODELS[name]``."""
    ckpt = work / f"{name}.pth"
    work.mkdir(parents=True, exist_ok=True)
    save_checkpoint(ckpt, model if model is not None else FRVSR(MODELS[name]))
    with running_service(work, ckpt.name, work, ["--response_timeout", "900", *extra], tag=name) as url:
        payload = {"content": base64.b64encode(video).decode()}
        runs = []
        for _ in range(repeat):
            t = time.perf_counter()
            r = requests.post(url + "/autotable/predict", json=payload, timeout=1800)
            wall = time.perf_counter() - t
            r.raise_for_status()
            tm = timing(r.headers["X-FRVSR-Timing"])
            runs.append({"wall": wall, "elapsed": r.json()["data"]["elapsed_time"], **tm, "out_bytes": len(r.json()["data"]["content"]) * 3 // 4})
        return runs


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="tiny,mid", help=f"comma-separated, from {sorted(MODELS)}")
    p.add_argument("--width", type=int, default=176)
    p.add_argument("--height", type=int, default=144)
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--fps", type=int, default=30)
    p.add_argument("--container", default="mp4", choices=["mp4", "avi"])
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--extra", default="", help="extra client_infer.py arguments, e.g. '--x264_preset superfast'")
    a = p.parse_args(argv)
    clip = moving_texture(int(a.seconds * a.fps), a.height, a.width)
    video = encode(clip, a.fps, a.container)
    threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"clip: {a.width}x{a.height}, {len(clip)} frames at {a.fps} fps, {a.container} {len(video) / 1e3:.0f} kB; {threads} cores")
    with tempfile.TemporaryDirectory(dir=ROOT / "runs" if (ROOT / "runs").is_dir() else None) as tmp:
        for name in a.models.split(","):
            runs = measure(name, clip, video, a.repeat, Path(tmp), a.extra.split())
            alone = model_only(MODELS[name], clip, threads)
            med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
            transport = med["wall"] - med["total"]
            print(
                f"{name:>5}: wall {med['wall']:.2f} s (min {min(r['wall'] for r in runs):.2f}) | worker total {med['total']:.2f}: "
                f"decode {med['decode']:.2f}, model {med['model']:.2f}, encode {med['encode']:.2f} (overlapped) | "
                f"transport {transport:.2f} | model alone {alone:.2f} s -> not-model share {(med['wall'] - alone) / med['wall']:.0%} | "
                f"out {med['out_bytes'] / 1e6:.1f} MB"
            )


if __name__ == "__main__":
    main()
