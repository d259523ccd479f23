"""A side-by-side crop (bicubic | model(s) | ground truth) of one test clip frame, for the README; with
``--frames N`` also the same crop over N frames as an animated PNG (lossless, so flicker can be seen).

    python -m bench.studies.compare_image --crf 23 --out docs/images/default_compare_crf23.png
    python -m bench.studies.compare_image --model model/pretrained/FRVSR_GAN_default.pth \
        model/pretrained/FRVSR_GAN_sharp.pth runs/teacher/basicvsr_BIx4.pth --labels default gan teacher \
        --box 150,60,112,112 --frames 7 --out docs/images/gan_compare.png
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

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
    p.add_argument("--labels", nargs="+", help="a name per --model for the caption band (default: file names)")
    p.add_argument("--frames", type=int, default=0, help="also write OUT's .apng: the crop over this many frames")
    p.add_argument("--out", default=str(ROOT / "docs" / "images" / "compare.png"))
    p.add_argument(
        "--crf", type=int, default=None, help="H.264-compress the low-res input at this CRF first (as uploads arrive)"
    )
    a = p.parse_args(argv)
    if a.labels and len(a.labels) != len(a.model):
        p.error(f"--labels needs one name per --model ({len(a.model)}), got {len(a.labels)}")
    sample = next(s for s in discover_samples(a.dataset_path) if s.name == a.clip)
    hr = crop_to_scale(read_clip(sample))
    lr, codec, bpp = lowres_input(to_tensor(hr), "bicubic", sample.name, a.crf)
    outs = []
    for m in a.model:  # a checkpoint holding two models: the one the server would pick for this upload
        models, _ = load_model_set(m)  # the whole clip (BasicVSR looks ahead)
        outs.append(np.stack(list(super_resolve(models.pick(codec, bpp)[1], lr))))
    bic = bicubic_upscale(to_tensor(lr))
    bic = (bic * 255).round().byte().permute(0, 2, 3, 1).numpy()
    x, y, w, h = map(int, a.box.split(","))
    names = ["bicubic", *(a.labels or [Path(m).stem for m in a.model]), "ground truth"]
    band = caption(names, w, scale=2)

    def row(t: int, scale: int) -> np.ndarray:
        tiles = [im[t, y : y + h, x : x + w] for im in (bic, *outs, hr)]
        gap = np.full((h, 4, 3), 255, np.uint8)
        out = np.concatenate([part for tile in tiles for part in (tile, gap)][:-1], axis=1)
        return cv2.resize(out, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)

    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    _, png = cv2.imencode(".png", cv2.cvtColor(np.concatenate([band, row(a.frame, 2)]), cv2.COLOR_RGB2BGR))
    atomic_write_bytes(a.out, png.tobytes())
    what = (
        f"bicubic | {' | '.join(names[1:-1])} | ground truth, clip {a.clip}, crop {a.box}, "
        f"input {'clean' if a.crf is None else f'H.264 CRF {a.crf}'}"
    )
    print(f"wrote {a.out}: {what}, frame {a.frame}")
    if a.frames:
        last = min(len(hr), a.frame + a.frames)
        small = caption(names, w, scale=1)
        pictures = [Image.fromarray(np.concatenate([small, row(t, 1)])) for t in range(a.frame, last)]
        anim = Path(a.out).with_suffix(".apng")
        buf = io.BytesIO()
        pictures[0].save(buf, format="PNG", save_all=True, append_images=pictures[1:], duration=400, loop=0)
        atomic_write_bytes(anim, buf.getvalue())
        print(f"wrote {anim}: {what}, frames {a.frame}-{last - 1}, 2.5 frames a second")
    return 0


def caption(names: list[str], w: int, scale: int) -> np.ndarray:
    """A white band with each tile's name over it (tiles ``w`` wide and 4 px apart, then resized by ``scale``)."""
    band = np.full((14, len(names) * (w + 4) - 4, 3), 255, np.uint8)
    for i, name in enumerate(names):
        cv2.putText(band, name, (i * (w + 4) + 2, 10), cv2.FONT_HERSHEY_PLAIN, 0.7, (0, 0, 0), 1, cv2.LINE_AA)
    return cv2.resize(band, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)


if __name__ == "__main__":
    sys.exit(main())
