"""What the request options do, measured through the route: the shipped default and the teacher served
together by client_infer.py (``--extra_model teacher``), real test clips at low resolution.

- the same clip at two output CRFs: response size and platform PSNR against the ground truth;
- the teacher vs the default on one test clip: wall time through the route and PSNR (clean input, sent as
  lossless FFV1, so ``input_quality`` auto picks the clean model);
- the time-left estimate (``GET /autotable/queue``, read once the upload is in) against the real time on a
  few clips, after the model has served one.

    python -m bench.studies.request_options    # ~5 minutes on the 2-core box; bench/results/request_options.{json,md}
"""

from __future__ import annotations

import argparse
import base64
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import requests

from bench.saved import save_result
from common.paths import DEFAULT_MODEL, ROOT, VIMEO_SAMPLE, VSR_TRAIN
from model.inference import to_tensor
from testing.clips import decode_frames, encode_video
from testing.launcher import ServiceProcess
from train.data import crop_to_scale, read_clip
from train.evaluate import lowres_frames, test_samples
from train.metrics import mse, psnr_from_mse
from wire.contract import MODEL_HEADER, PREDICT_PATH, QUEUE_PATH, REQUEST_ID_HEADER

OUT = ROOT / "bench" / "results" / "request_options"


def clip_of(sample) -> tuple[np.ndarray, np.ndarray]:
    """(ground truth uint8 (t, H, W, 3), the platform's clean low-res frames)."""
    hr = crop_to_scale(read_clip(sample))
    return hr, lowres_frames(to_tensor(hr), "bicubic", sample.name)


def send(svc: ServiceProcess, video: bytes, request_id: str | None = None, **fields) -> tuple[requests.Response, float]:
    t = time.perf_counter()
    headers = {REQUEST_ID_HEADER: request_id} if request_id else {}
    r = requests.post(
        svc.url + PREDICT_PATH,
        json={"content": base64.b64encode(video).decode(), **fields},
        headers=headers,
        timeout=3600,
    )
    return r, time.perf_counter() - t


def psnr_of(r: requests.Response, gt: np.ndarray) -> float:
    out = np.stack(decode_frames(base64.b64decode(r.json()["data"]["content"])))
    return psnr_from_mse(mse(out / 255.0, gt / 255.0))


def estimate_vs_real(svc: ServiceProcess, video: bytes, tag: str) -> dict:
    """Send ``video``; read the estimate once the proxy has the upload; compare with when the answer came."""
    box: dict = {}
    worker = threading.Thread(target=lambda: box.update(res=send(svc, video, tag)))
    worker.start()
    est = None
    while worker.is_alive() and est is None:
        d = requests.get(svc.url + QUEUE_PATH, params={"request": tag}, timeout=10).json()["data"]
        if d.get("estimated_time_left_s") is not None:
            est, t_est = d["estimated_time_left_s"], time.perf_counter()
        time.sleep(0.05)
    worker.join()
    r, _ = box["res"]
    real = time.perf_counter() - t_est if est is not None else None
    return {"clip": tag, "estimate_s": est, "real_s": real, "error": None if est is None else (est - real) / real}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.studies.request_options", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    p.add_argument("--out", type=Path, default=OUT)
    a = p.parse_args(argv)
    if not (VIMEO_SAMPLE.is_dir() and VSR_TRAIN.is_dir()):
        print("skipped: the shared test clips are not here", file=sys.stderr)
        return 0
    res: dict = {"model": str(a.model)}
    with tempfile.TemporaryDirectory() as tmp:
        svc = ServiceProcess(
            a.model.parent, a.model.name, Path(tmp), name="options", extra=["--extra_model", "teacher"]
        )
        t = time.perf_counter()
        svc.start(timeout_s=900)
        res["startup_s"] = time.perf_counter() - t
        try:
            res["models"] = requests.get(svc.url + "/autotable/models", timeout=30).json()["data"]
            gt, lr = clip_of(test_samples(VIMEO_SAMPLE)[2])
            h264 = encode_video(lr, "mp4_h264", fps=25, options={"crf": "18", "preset": "veryfast"})
            lossless = encode_video(lr, "mkv_ffv1_rgb", fps=25)
            send(svc, h264)  # the default's first clip (warm)
            res["crf"] = []
            for crf in (12, 28):
                r, s = send(svc, h264, crf=crf)
                res["crf"].append({"crf": crf, "bytes": len(base64.b64decode(r.json()["data"]["content"])),
                                   "psnr": psnr_of(r, gt), "seconds": s})  # fmt: skip
            res["teacher_vs_default"] = []
            for name in (None, "teacher"):
                fields = {"model": name} if name else {}
                r, s = send(svc, lossless, **fields)
                res["teacher_vs_default"].append(
                    {"model": r.headers.get(MODEL_HEADER), "seconds": s, "psnr": psnr_of(r, gt), "frames": len(gt)}
                )
            res["estimates"] = []
            for i, sample in enumerate(test_samples(VSR_TRAIN)[:6]):
                _, lr = clip_of(sample)
                lr = lr[:, : lr.shape[1] // 2 * 2, : lr.shape[2] // 2 * 2]  # even sides for 4:2:0
                if lr.shape[1] * lr.shape[2] > 40000 or len(lr) > 150:
                    continue
                video = encode_video(lr, "mp4_h264", fps=25, options={"crf": "20", "preset": "veryfast"})
                row = estimate_vs_real(svc, video, f"clip{i}")
                row.update(name=sample.name, size=f"{lr.shape[2]}x{lr.shape[1]}", frames=len(lr))
                res["estimates"].append(row)
        finally:
            svc.stop()
    save_result(a.out, res, markdown(res))
    return 0


def markdown(res: dict) -> str:
    lines = [f"Model `{res['model']}` and the teacher, served together; start-up {res['startup_s']:.0f} s.", ""]
    lines += ["| output CRF | bytes | PSNR (dB) | seconds |", "|---:|---:|---:|---:|"]
    lines += [f"| {r['crf']} | {r['bytes']:,} | {r['psnr']:.3f} | {r['seconds']:.2f} |" for r in res["crf"]]
    lines += ["", "| model | frames | seconds through the route | PSNR (dB) |", "|---|---:|---:|---:|"]
    lines += [
        f"| {r['model']} | {r['frames']} | {r['seconds']:.2f} | {r['psnr']:.3f} |" for r in res["teacher_vs_default"]
    ]
    lines += ["", "| clip | size | frames | estimate (s) | real (s) | error |", "|---|---|---:|---:|---:|---:|"]
    for r in res["estimates"]:
        err = "n/a" if r["error"] is None else f"{100 * r['error']:+.0f} %"
        est = "n/a" if r["estimate_s"] is None else f"{r['estimate_s']:.2f}"
        real = "n/a" if r["real_s"] is None else f"{r['real_s']:.2f}"
        lines.append(f"| {r['name']} | {r['size']} | {r['frames']} | {est} | {real} | {err} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
