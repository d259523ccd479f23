"""Time a clip end to end through POST /autotable/predict and split where the time goes.

    python -m bench.measure                              # tiny and 32/4/16 models, 176x144, 5 s, 30 fps
    python -m bench.measure --models mid --repeat 5 --container avi

For each model config: write a random-weight checkpoint, start client_infer.py on free ports
(``testing.launcher.ServiceProcess``), post the clip ``--repeat`` times, and report client wall time, the
worker's stage times (decode, model, encode; they overlap), transport (client wall - worker total: proxy,
TorchServe, base64, JSON, HTTP) and the model alone (``super_resolve`` on the same frames in this process,
same threads).
"""

from __future__ import annotations

import argparse
import base64
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import requests

from common.paths import ROOT
from model.runtime import available_cores
from testing.clips import encode_video, moving_clip
from testing.launcher import ServiceProcess
from wire.contract import PREDICT_PATH, TIMING_HEADER, b64_decoded_len, parse_timing

MODELS = {  # FRVSRConfig arguments
    "tiny": {"channels": 8, "blocks": 1, "fnet_channels": 4},
    "mid": {"channels": 32, "blocks": 4, "fnet_channels": 16},
}
CONTAINERS = {"mp4": "mp4_h264", "avi": "avi_mjpeg"}


def model_only(model, clip: np.ndarray, threads: int) -> float:
    """Seconds for ``super_resolve`` on ``clip`` in this process, laid out and cast as the service runs it
    (the frames after the first, timed after it, scaled to the whole clip)."""
    import torch

    from model.inference import time_super_resolve

    torch.set_num_threads(threads)
    model = model.eval().to(memory_format=torch.channels_last)  # as load_checkpoint lays it out
    return time_super_resolve(model, list(clip)) * len(clip) / (len(clip) - 1)


def measure(name: str, video: bytes, repeat: int, work: Path, extra: list[str], model=None) -> list[dict]:
    """Serve ``model`` (default: a fresh ``MODELS[name]``) and post ``video`` ``repeat`` times; one dict per run:
    wall (client), elapsed (proxy), the worker's stage seconds, out_bytes."""
    from model.checkpoint import save_checkpoint
    from model.frvsr import FRVSR, FRVSRConfig

    ckpt = work / f"{name}.pth"
    work.mkdir(parents=True, exist_ok=True)
    if isinstance(model, (str, Path)):  # a checkpoint file as it is (a paired one keeps both models)
        shutil.copyfile(model, ckpt)
    else:
        save_checkpoint(ckpt, model if model is not None else FRVSR(FRVSRConfig(**MODELS[name])))
    with ServiceProcess(work, ckpt.name, work, name=name, extra=["--response_timeout", "900", *extra]).start() as svc:
        payload = {"content": base64.b64encode(video).decode()}
        runs = []
        for _ in range(repeat):
            t = time.perf_counter()
            r = requests.post(svc.url + PREDICT_PATH, json=payload, timeout=1800)
            wall = time.perf_counter() - t
            r.raise_for_status()
            data = r.json()["data"]
            runs.append(
                {
                    "wall": wall,
                    "elapsed": data["elapsed_time"],
                    **parse_timing(r.headers[TIMING_HEADER]),
                    "out_bytes": b64_decoded_len(len(data["content"])),
                }
            )
        return runs


def main(argv: list[str] | None = None) -> None:
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as client_infer.py sets for the workers; before torch loads
    from model.frvsr import FRVSR, FRVSRConfig

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="tiny,mid", help=f"comma-separated, from {sorted(MODELS)}")
    p.add_argument("--width", type=int, default=176)
    p.add_argument("--height", type=int, default=144)
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--fps", type=int, default=30)
    p.add_argument("--container", default="mp4", choices=sorted(CONTAINERS))
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--extra", default="", help="extra client_infer.py arguments, e.g. '--x264_preset superfast'")
    a = p.parse_args(argv)
    clip = moving_clip(int(a.seconds * a.fps), a.height, a.width)
    video = encode_video(clip, CONTAINERS[a.container], a.fps)
    threads = available_cores()
    print(
        f"clip: {a.width}x{a.height}, {len(clip)} frames at {a.fps} fps, {a.container} {len(video) / 1e3:.0f} kB; "
        f"{threads} cores"
    )
    with tempfile.TemporaryDirectory(dir=ROOT / "runs" if (ROOT / "runs").is_dir() else None) as tmp:
        for name in a.models.split(","):
            runs = measure(name, video, a.repeat, Path(tmp), a.extra.split())
            alone = model_only(FRVSR(FRVSRConfig(**MODELS[name])), clip, threads)
            med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
            transport = med["wall"] - med["total"]
            print(
                f"{name:>5}: wall {med['wall']:.2f} s (min {min(r['wall'] for r in runs):.2f}) | "
                f"worker total {med['total']:.2f}: "
                f"decode {med['decode']:.2f}, model {med['model']:.2f}, encode {med['encode']:.2f} (overlapped) | "
                f"transport {transport:.2f} | model alone {alone:.2f} s -> "
                f"not-model share {(med['wall'] - alone) / med['wall']:.0%} | "
                f"out {med['out_bytes'] / 1e6:.1f} MB"
            )


if __name__ == "__main__":
    main()
