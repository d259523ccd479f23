"""Does the video codec eat the model's gain? The shipped model through POST /autotable/predict vs in-process.

For each clip of the shared test list: low-res frames (the evaluation degradation) are sent losslessly
(FFV1 in MKV, so the input is exact), the 4x answer (H.264, CRF 18) is decoded, and its PSNR against the
ground truth is compared with the PSNR of ``super_resolve`` run in this process.

    python bench/route_fidelity.py                          # the default encoder (H.264 4:2:0, CRF 18)
    python bench/route_fidelity.py --x264_rgb --x264_crf 12  # fidelity mode
"""

from __future__ import annotations

import base64
import io
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import av  # noqa: E402
import numpy as np  # noqa: E402
import requests  # noqa: E402

from model.frvsr import load_checkpoint, super_resolve  # noqa: E402
from serving.measure import running_service  # noqa: E402
from train.data import crop_to_scale, discover_samples, read_clip, read_list, to_float  # noqa: E402
from train.evaluate import lowres_frames  # noqa: E402
from train.metrics import mse, psnr_from_mse  # noqa: E402

SHARED = ROOT.parent / "shared" / "data" / "vimeo90k_sample"
MODEL = ROOT / "model" / "pretrained" / "FRVSR_GAN_default.pth"


def encode_lossless(frames: np.ndarray, fps: int = 30) -> bytes:
    buf = io.BytesIO()
    with av.open(buf, "w", format="matroska") as c:
        s = c.add_stream("ffv1", rate=fps)
        s.height, s.width = frames.shape[1:3]
        s.pix_fmt = "bgr0"
        for i, f in enumerate(frames):
            vf = av.VideoFrame.from_ndarray(f, format="rgb24")
            vf.pts = i
            c.mux(s.encode(vf))
        c.mux(s.encode(None))
    return buf.getvalue()


def decode(data: bytes) -> np.ndarray:
    with av.open(io.BytesIO(data)) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])


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
    with tempfile.TemporaryDirectory() as tmp, running_service(MODEL.parent, MODEL.name, Path(tmp), extra) as url:
        print("| clip | in-process PSNR | through the route PSNR | difference (dB) |\n|---|---|---|---|")
        for name, hr in sorted(clips.items()):
            lr = lowres_frames(to_float(hr), "bicubic")
            local = np.stack(list(super_resolve(model, lr)))
            r = requests.post(url + "/autotable/predict", json={"content": base64.b64encode(encode_lossless(lr)).decode()}, timeout=600)
            r.raise_for_status()
            routed = decode(base64.b64decode(r.json()["data"]["content"]))
            assert routed.shape == local.shape, (routed.shape, local.shape)
            a, b = psnr(local, hr), psnr(routed, hr)
            print(f"| {name} ({lr.shape[2]}x{lr.shape[1]} -> {routed.shape[2]}x{routed.shape[1]}) | {a:.3f} | {b:.3f} | {a - b:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
