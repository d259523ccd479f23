"""Does the video codec eat the model's gain? The shipped model through POST /autotable/predict vs in-process.

For each clip of the shared test list: low-res frames (the evaluation degradation) are sent losslessly
(FFV1 in MKV, so the input is exact), the 4x answer (H.264, CRF 18) is decoded, and its PSNR against the
ground truth is compared with the PSNR of ``super_resolve`` run in this process.

    python -m bench.studies.route_fidelity                          # the default encoder settings
    python -m bench.studies.route_fidelity --always_420             # any client_infer.py options
"""

from __future__ import annotations

import base64
import sys
import tempfile
from pathlib import Path

import numpy as np
import requests

from common.paths import DEFAULT_MODEL, VIMEO_SAMPLE
from model.checkpoint import load_checkpoint
from model.inference import super_resolve, to_tensor
from testing.clips import decode_frames, encode_video
from testing.launcher import ServiceProcess
from train.data import crop_to_scale, discover_samples, read_clip, read_list
from train.evaluate import lowres_frames
from train.metrics import mse, psnr_from_mse
from wire.contract import PREDICT_PATH

SHARED = VIMEO_SAMPLE
MODEL = DEFAULT_MODEL


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return psnr_from_mse(mse(a.astype(np.float64) / 255, b.astype(np.float64) / 255))


def main(argv: list[str] | None = None) -> int:
    extra = list(sys.argv[1:] if argv is None else argv)  # extra client_infer.py options, e.g. --x264_rgb --x264_crf 12
    if not SHARED.is_dir():
        print(f"skipped: {SHARED} not found")
        return 0
    names = set(read_list(SHARED, "sep_testlist.txt"))
    clips = {s.name: crop_to_scale(read_clip(s)) for s in discover_samples(SHARED) if s.name in names}
    model = load_checkpoint(MODEL)[0]
    with (
        tempfile.TemporaryDirectory() as tmp,
        ServiceProcess(MODEL.parent, MODEL.name, Path(tmp), extra=extra).start() as svc,
    ):
        print("| clip | in-process PSNR | through the route PSNR | difference (dB) |\n|---|---|---|---|")
        for name, hr in sorted(clips.items()):
            lr = lowres_frames(to_tensor(hr), "bicubic")
            local = np.stack(list(super_resolve(model, lr)))
            lossless = encode_video(lr, "mkv_ffv1_rgb", 30)
            r = requests.post(
                svc.url + PREDICT_PATH, json={"content": base64.b64encode(lossless).decode()}, timeout=600
            )
            r.raise_for_status()
            routed = np.stack(decode_frames(base64.b64decode(r.json()["data"]["content"])))
            assert routed.shape == local.shape, (routed.shape, local.shape)
            a, b = psnr(local, hr), psnr(routed, hr)
            print(
                f"| {name} ({lr.shape[2]}x{lr.shape[1]} -> {routed.shape[2]}x{routed.shape[1]}) "
                f"| {a:.3f} | {b:.3f} | {a - b:.3f} |"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
