"""The sharp model against what it has to beat, by the measures people in video use (issue 28).

The shipped default, the default's output through an unsharp mask (Gaussian sigma 1, amount 0.5: the
baseline that buys VMAF by sharpening alone), the shipped FRVSR_GAN (``model/pretrained/FRVSR_GAN_sharp.pth``)
and the teacher, each as a server runs it (``load_for_serving``; a paired file's H.264 rows by the model the
server picks), on both shared test lists, clean BI x1/4 input and that input H.264 CRF 23, scored by
``client_test.py``'s own code: PSNR-Y, VMAF and VMAF NEG (the 8-bit BT.601 luma of the whole clip), BRISQUE
(lower is more natural; the ground truth's beside it) and tOF (px), with bicubic on the same input.

    OMP_WAIT_POLICY=PASSIVE python -m bench.perceptual [--rows default unsharp gan teacher] [--lists vsr_train vimeo]

Saves ``bench/results/perceptual.{json,md}``; ``make bench`` runs it too (``bench.run_bench``). With ``--rows``
only those are computed and the file's other rows are kept (so a new GAN is scored without rerunning the rest).
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from bench.saved import save_result
from common.paths import DEFAULT_MODEL, GAN_MODEL, ROOT, TEST_LISTS
from model.quantize import load_for_serving
from train.degradations import EVAL_CRF
from train.evaluate import evaluate_conditions, test_samples
from train.report import GROUND_TRUTH, MODEL_NAME, summarize

log = logging.getLogger(__name__)
OUT = ROOT / "bench" / "results" / "perceptual"
UNSHARP = 0.5  # the sharpening baseline's amount (issue 28's comparison row)
MEASURES = ("PSNR_Y", "VMAF", "VMAF_NEG", "BRISQUE", "tOF")
CONDITIONS = {"clean": None, f"crf{EVAL_CRF}": EVAL_CRF}  # name: the CRF (None: clean)


def unsharp(frames: np.ndarray, amount: float, sigma: float = 1.0) -> np.ndarray:
    """uint8 (t, H, W, 3) -> the same through an unsharp mask: x + amount * (x - Gaussian(x, sigma))."""
    out = []
    for f in frames.astype(np.float32):
        out.append(f + amount * (f - cv2.GaussianBlur(f, (0, 0), sigma)))
    return np.clip(np.rint(np.stack(out)), 0, 255).astype(np.uint8)


ROWS = ("default", "unsharp", "gan", "teacher")  # --rows, in the table's order
Entry = tuple[str, str, Callable[[], Path], Callable | None]  # key, row name, the checkpoint, a filter on its output


def entries(teacher_dir: Path, keys: tuple[str, ...] = ROWS) -> list[Entry]:
    """(key, row name, the checkpoint, a filter on its output) for each of ``keys`` that can be had here."""
    from model.teacher import export

    rows = []
    if DEFAULT_MODEL.is_file():
        rows.append(("default", "default", lambda: DEFAULT_MODEL, None))
        sharpened = functools.partial(unsharp, amount=UNSHARP)
        rows.append(("unsharp", f"default + unsharp {UNSHARP}", lambda: DEFAULT_MODEL, sharpened))
    if GAN_MODEL.is_file():
        rows.append(("gan", "gan (FRVSR_GAN)", lambda: GAN_MODEL, None))
    rows.append(("teacher", "teacher (BasicVSR)", lambda: export(teacher_dir), None))
    return [r for r in rows if r[0] in keys]


def condition_scores(results) -> dict:
    """One condition's means: the model's measures, bicubic's, the ground truth's BRISQUE."""
    s = summarize(results)
    return {
        "model": {k: s[MODEL_NAME][k] for k in MEASURES},
        "bicubic": {k: s["Bicubic"][k] for k in MEASURES},
        "gt_BRISQUE": s[GROUND_TRUTH]["BRISQUE"],
    }


def run(lists: dict[str, Path], teacher: bool = True, keys: tuple[str, ...] = ROWS) -> list[dict]:
    rows = []
    keys = tuple(k for k in keys if teacher or k != "teacher")
    with tempfile.TemporaryDirectory() as tmp:
        for key, name, checkpoint, post in entries(Path(tmp), keys):
            models, precision, _ = load_for_serving(checkpoint())
            row = {"key": key, "name": name, "precision": precision}
            for list_name, folder in lists.items():
                runs = evaluate_conditions(
                    models, test_samples(folder), "bicubic", "cpu", [EVAL_CRF], precision=precision,
                    with_perceptual=True, post=post,
                )  # fmt: skip
                row[list_name] = {c: condition_scores(runs[crf]) for c, crf in CONDITIONS.items()}
                log.info("%s on %s: %s", name, list_name, row[list_name])
            rows.append(row)
    return rows


def markdown(rows: list[dict], title: str = "### Sharpness, naturalness and flicker (bench.perceptual)") -> str:
    out = [
        title,
        "",
        f"Both shared test lists; clean = BI x1/4, CRF {EVAL_CRF} = that low-res H.264 4:2:0 (libx264). PSNR-Y in dB; "
        "VMAF and VMAF NEG (vmaf-torch, v0.6.1) on the 8-bit BT.601 luma of the whole clip; BRISQUE lower is more "
        "natural (the ground truth's in the last column); tOF in px, lower flickers less. Each model as a server runs "
        f"it; the unsharp row is the default's output through an unsharp mask (sigma 1, amount {UNSHARP}).",
        "",
        "| model | list | input | PSNR-Y | VMAF | VMAF NEG | BRISQUE | tOF | bicubic VMAF | GT BRISQUE |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for list_name in TEST_LISTS:
        for cond in CONDITIONS:
            for r in rows:
                if list_name not in r:
                    continue
                q = r[list_name][cond]
                m = q["model"]
                out.append(
                    f"| {r['name']} | {list_name} | {cond} | {m['PSNR_Y']:.3f} | {m['VMAF']:.2f} | "
                    f"{m['VMAF_NEG']:.2f} | {m['BRISQUE']:.2f} | {m['tOF']:.3f} | {q['bicubic']['VMAF']:.2f} | "
                    f"{q['gt_BRISQUE']:.2f} |"
                )
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--skip-teacher", action="store_true", help="leave the teacher's rows out (minutes per clip)")
    p.add_argument("--rows", nargs="+", choices=ROWS, help="compute only these; keep the saved file's others")
    p.add_argument("--lists", nargs="+", choices=sorted(TEST_LISTS), default=list(TEST_LISTS))
    p.add_argument("--out", type=Path, default=OUT)
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    lists = {k: TEST_LISTS[k] for k in a.lists}
    missing = [str(v) for v in lists.values() if not v.is_dir()]
    if missing:
        print(f"error: test data not found: {', '.join(missing)} (the shared data beside the project)", file=sys.stderr)
        return 2
    rows = run(lists, teacher=not a.skip_teacher, keys=tuple(a.rows or ROWS))
    saved = a.out.with_suffix(".json")
    if a.rows and saved.is_file():  # the rows not recomputed, as they were
        new = {r["key"] for r in rows}
        rows += [r for r in json.loads(saved.read_text())["rows"] if r.get("key") not in new]
    rows.sort(key=lambda r: ROWS.index(r["key"]))
    save_result(a.out, {"rows": rows, "unsharp": UNSHARP, "crf": EVAL_CRF}, markdown(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
