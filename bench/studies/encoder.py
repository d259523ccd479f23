"""The 4x output's encoder: x264 presets and tunes, their time and CPU against what they cost the picture.

The frames are a real test clip's ground truth at the 4x output size of a 176x144 request (704x576 crops,
ping-ponged to 150 frames: 5 s at 30 fps), encoded by the service's own writer (``video.io.VideoWriter``,
H.264 4:2:0 at the default CRF), decoded, and compared with what went in (platform PSNR): the loss the encoder
adds on top of the model. Wall time with the encoder's own threads, and the process CPU seconds it used (what
it takes from the model on a 2-core box).

    python -m bench.studies.encoder          # bench/results/encoder.{json,md}; about a minute
"""

from __future__ import annotations

import argparse
import sys
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import psutil

from bench.saved import save_result
from common.paths import ROOT, VSR_TRAIN
from testing.clips import decode_frames, moving_clip
from train.data import read_clip
from train.evaluate import test_samples
from train.metrics import mse, psnr_from_mse
from video.io import VideoInfo, VideoWriter
from video.settings import EncoderSettings

OUT = ROOT / "bench" / "results" / "encoder"
# (preset, tune, crf): the presets at the default CRF, and ultrafast at the CRFs that bring its size back down
CHOICES = [
    ("ultrafast", None, 18), ("ultrafast", None, 20), ("ultrafast", None, 22), ("superfast", None, 18),
    ("veryfast", None, 18), ("veryfast", "zerolatency", 18), ("faster", None, 18),
]  # fmt: skip


def frames_4x(h: int = 576, w: int = 704, n: int = 150) -> tuple[np.ndarray, str]:
    """(uint8 (n, h, w, 3), where they came from): the longest vsr_train test clip resized to h x w (real motion and
    detail; no test clip is that large), ping-ponged to n frames; else a synthetic clip."""
    import cv2

    if VSR_TRAIN.is_dir():
        best = max(test_samples(VSR_TRAIN), key=lambda s: (len(s.frames), s.name))
        clip = [cv2.resize(f, (w, h), interpolation=cv2.INTER_AREA) for f in read_clip(best)]
        order = [*range(len(clip)), *range(len(clip) - 2, 0, -1)]
        return np.stack([clip[order[i % len(order)]] for i in range(n)]), f"vsr_train {best.name} resized, ping-pong"
    return np.asarray(moving_clip(n, h, w)), "synthetic moving clip (../shared absent)"


def encode(frames: np.ndarray, settings: EncoderSettings) -> tuple[bytes, float, float]:
    n, h, w, _ = frames.shape
    fps = Fraction(30)
    info = VideoInfo("mp4", "mov,mp4", "h264", w // 4, h // 4, fps, 1 / fps, n, n / 30, None, pix_fmt="yuv420p")

    proc = psutil.Process()
    c0, t0 = sum(proc.cpu_times()[:2]), time.perf_counter()
    writer = VideoWriter(info, "mp4", w, h, settings)
    for i, f in enumerate(frames):
        writer.write(f, i)
    data = writer.finish()
    return data, time.perf_counter() - t0, sum(proc.cpu_times()[:2]) - c0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.studies.encoder", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=OUT)
    a = p.parse_args(argv)
    frames, source = frames_4x()
    rows = []
    for preset, tune, crf in CHOICES:
        s = EncoderSettings(x264_preset=preset, x264_tune=tune, x264_crf=crf)
        data, wall, cpu = encode(frames, s)
        back = np.stack(decode_frames(data))
        psnr = psnr_from_mse(mse(back.astype(np.float64) / 255, frames.astype(np.float64) / 255))
        row = {"preset": preset, "tune": tune, "crf": crf, "wall_s": wall, "cpu_s": cpu, "bytes": len(data)}
        rows.append({**row, "psnr": psnr})
        print(rows[-1], flush=True)
    res = {"source": source, "frames": len(frames), "size": f"{frames.shape[2]}x{frames.shape[1]}", "rows": rows}
    save_result(a.out, res, markdown(res))
    return 0


def markdown(res: dict) -> str:
    crf = EncoderSettings().x264_crf
    out = [
        f"Encoding {res['frames']} frames of {res['size']} ({res['source']}) with the service's writer, H.264 4:2:0 "
        f"(the default CRF is {crf}): wall time, process CPU seconds, size, and the PSNR of the decoded frames "
        "against the frames given (the encoder's own loss, 4:2:0 chroma included).",
        "",
        "| preset | tune | CRF | wall s | CPU s | ms CPU/frame | MB | PSNR dB |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in res["rows"]:
        out.append(
            f"| {r['preset']} | {r['tune'] or '-'} | {r['crf']} | {r['wall_s']:.2f} | {r['cpu_s']:.2f} | "
            f"{r['cpu_s'] / res['frames'] * 1000:.1f} | {r['bytes'] / 1e6:.2f} | {r['psnr']:.2f} |"
        )
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    sys.exit(main())
