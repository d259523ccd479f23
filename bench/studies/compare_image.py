"""A side-by-side crop (bicubic | model(s) | ground truth) of one test clip frame, for the README.

    python -m bench.studies.compare_image --crf 23 --out docs/images/default_compare_crf23.png
    python -m bench.studies.compare_image --model model/pretrained/FRVSR_GAN_default.pth \
        runs/models/<uuid>/FRVSR_GAN_gan.pth --box 150,60,112,112 --out docs/images/gan_compare.png
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

from common.files import atomic_write_bytes
from common.paths import DEFAULT_MODEL, ROOT, VIMEO_SAMPLE
from model.inference import super_resolve, to_tensor
from model.variants import load_model_set
from train.data import bicubic_upscale, crop_to_scale, discover_samples, read_clip
from train.evaluate import lowres_input


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--dataset_path", default=str(VIMEO_SAMPLE))
    p.add_argument("--clip", default="00002/0007")
    p.add_argument("--frame", type=int, default=4)
    p.add_argument("--box", default="150,60,128,128", help="x,y,w,h of the high-res crop")
    p.add_argument(
        "--model",
        nargs="+",
        default=[str(DEFAULT_MODEL)],
        help="one or more checkpoints, shown left to right",
    )
    p.add_argument("--out", default=str(ROOT / "docs" / "images" / "compare.png"))
    p.add_argument(
        "--crf", type=int, default=None, help="H.264-compress the low-res input at this CRF first (as uploads arrive)"
    )
    a = p.parse_args(argv)
    sample = next(s for s in discover_samples(a.dataset_path) if s.name == a.clip)
    hr = crop_to_scale(read_clip(sample))
    lr, codec, bpp = lowres_input(to_tensor(hr), "bicubic", sample.name, a.crf)
    outs = []
    for m in a.model:  # a checkpoint holding two models: the one the server would pick for this upload
        models, _ = load_model_set(m)
        outs.append(
            list(super_resolve(models.pick(codec, bpp)[1], lr))[a.frame]
        )  # the whole clip: BasicVSR looks ahead
    bic = bicubic_upscale(to_tensor(lr[a.frame : a.frame + 1]))[0]
    bic = (bic * 255).round().byte().permute(1, 2, 0).numpy()
    x, y, w, h = map(int, a.box.split(","))
    tiles = [im[y : y + h, x : x + w] for im in (bic, *outs, hr[a.frame])]
    gap = np.full((h, 4, 3), 255, np.uint8)
    row = np.concatenate([part for t in tiles for part in (t, gap)][:-1], axis=1)
    row = cv2.resize(row, None, fx=2, fy=2, interpolation=cv2.INTER_NEAREST)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    _, png = cv2.imencode(".png", cv2.cvtColor(row, cv2.COLOR_RGB2BGR))
    atomic_write_bytes(a.out, png.tobytes())
    print(
        f"wrote {a.out}: bicubic | {' | '.join(Path(m).name for m in a.model)} | ground truth, "
        f"clip {a.clip} frame {a.frame}, crop {a.box}, input {'clean' if a.crf is None else f'H.264 CRF {a.crf}'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
