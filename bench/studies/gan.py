"""The GAN-stage study: perceptual terms compared from the same start, on the same data, for the same CPU time.

Each arm is a ``client_train.py`` run of the adversarial stage (``gan``) with ``max_cpu_minutes``, started from
the same generator (``init_from``); its curve is its validation history: the training degradation (the
``realistic`` mix, deterministic per clip) on both test lists' clips together, with PSNR, tOF, VMAF and VMAF NEG
as ``client_test.py`` computes them. Beside the arms, the same validation scored for the starting model and for
the starting model's output through an unsharp mask (Gaussian sigma 1, amount 0.5): the baseline that buys VMAF
by sharpening alone, which a GAN has to beat (issue 28).

    python -m bench.studies.gan --arm A=runs/models/<uuid> --arm B=runs/models/<uuid> \
        --start runs/gan/compressed.pth [--unsharp 0.5]

``--baselines FILE`` keeps the unsharp baseline's scores in FILE (computed once, while the arms train, by
``--arm`` pointing at a run that has written its ``settings.json``).

Saves ``bench/results/gan_study.{json,md,png}`` (``--out`` to change).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np
import torch

from bench.perceptual import unsharp
from bench.saved import save_result
from common.paths import ROOT, VSR_TRAIN
from model.checkpoint import load_checkpoint
from model.inference import super_resolve, to_tensor
from train.config import TrainConfig
from train.data import crop_to_scale, read_clip
from train.evaluate import lowres_input
from train.metrics import Aggregate, optical_flows, score_clip, vmaf_motion
from train.trainer import load_splits

log = logging.getLogger(__name__)
CURVE_KEYS = ("val_psnr", "val_tof", "val_vmaf", "val_vmaf_neg")
DESIGN_KEYS = ("w_adv", "w_fm", "w_vmaf", "w_spectrum", "w_pingpong", "lr", "crop_size", "num_frames", "batch_size")


def curve(run: Path) -> list[dict]:
    """A GAN run's validations, the starting model's (step 0, no CPU time of its own yet) first."""
    if (run / "history.json").is_file():
        entries = json.loads((run / "history.json").read_text())
    else:
        entries = torch.load(run / "resume.pt", map_location="cpu", weights_only=False)["run_state"]["history"]
    points = []
    for h in entries:
        if "val_psnr" not in h:
            continue
        minutes = h.get("own_cpu_seconds", 0.0) / 60
        points.append({"step": h["step"], "own_cpu_minutes": minutes, **{k: h.get(k) for k in CURVE_KEYS}})
    return points


def arm_row(name: str, run: Path) -> dict:
    settings = json.loads((run / "settings.json").read_text())
    points = curve(run)
    return {
        "arm": name,
        "run": str(run),
        "design": {k: settings.get(k) for k in DESIGN_KEYS},
        "curve": points,
        "last": points[-1],
    }


def baselines(start: Path, dataset: str, settings: dict, amount: float) -> dict[str, dict]:
    """The starting model through ``unsharp(amount)``, on the arms' own validation clips and input (the starting
    model alone is every arm's step-0 validation)."""
    cfg = TrainConfig.from_settings(settings)
    _, samples = load_splits(dataset, cfg)
    net, _ = load_checkpoint(start, "cpu")
    net.eval()
    name, agg = f"start + unsharp {amount}", Aggregate()
    for s in samples:
        clip = crop_to_scale(read_clip(s))
        lr, _, _ = lowres_input(to_tensor(clip), cfg.degradation, s.name, None)
        out = np.stack(list(super_resolve(net, lr, precision=cfg.precision)))
        gt = clip.astype(np.float64) / 255.0
        flows, motion = optical_flows(gt), vmaf_motion(gt)
        agg.add(score_clip(s.name, unsharp(out, amount).astype(np.float64) / 255.0, gt, False, flows, motion))
        log.info("%s scored", s.name)
    return {name: {"val_psnr": agg.result()["PSNR"], "val_tof": agg.tof(), "val_vmaf": agg.vmaf(),
                   "val_vmaf_neg": agg.vmaf_neg()}}  # fmt: skip


def plot(res: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    titles = {"val_psnr": "PSNR (dB)", "val_tof": "tOF (px, lower is better)", "val_vmaf": "VMAF",
              "val_vmaf_neg": "VMAF NEG"}  # fmt: skip
    fig, axes = plt.subplots(2, 2, figsize=(10, 7))
    for ax, key in zip(axes.flat, CURVE_KEYS, strict=True):
        for r in res["arms"]:
            c = [p for p in r["curve"] if p[key] is not None]
            ax.plot([p["own_cpu_minutes"] for p in c], [p[key] for p in c], marker="o", label=r["arm"])
        for i, (name, b) in enumerate(res["baselines"].items()):
            ax.axhline(b[key], color=f"C{7 + i}", ls="--", lw=1, label=name)
        ax.set_title(titles[key])
        ax.set_xlabel("own CPU-minutes")
        ax.grid(alpha=0.3)
    axes.flat[0].legend(fontsize=8)
    fig.suptitle("GAN stage: equal CPU budgets from the same generator (validation, realistic input)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def markdown(res: dict) -> str:
    lines = [
        "GAN-stage study (`python -m bench.studies.gan`): each arm the adversarial stage from the same generator",
        f"(`{res['start']}`), same data, seed and own CPU budget; validation on both test lists' clips together,",
        "the training degradation (`realistic`, fixed per clip); tOF lower is better.",
        "",
        "| arm | design | steps | own CPU-min | PSNR | tOF | VMAF | VMAF NEG |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, b in res["baselines"].items():
        scores = f"{b['val_psnr']:.3f} | {b['val_tof']:.4f} | {b['val_vmaf']:.2f} | {b['val_vmaf_neg']:.2f}"
        lines.append(f"| {name} | | | | {scores} |")
    for r in res["arms"]:
        design = ", ".join(f"{k} {v}" for k, v in r["design"].items() if v is not None)
        p = r["last"]
        lines.append(
            f"| {r['arm']} | {design} | {p['step']} | {p['own_cpu_minutes']:.1f} | {p['val_psnr']:.3f} | "
            f"{p['val_tof']:.4f} | {p['val_vmaf']:.2f} | {p['val_vmaf_neg']:.2f} |"
        )
    lines += ["", "Curves (every validation):", ""]
    for r in res["arms"]:
        lines.append(f"- {r['arm']}: " + "; ".join(
            f"{p['own_cpu_minutes']:.1f} min {p['val_psnr']:.3f} dB / VMAF {p['val_vmaf']:.2f} / NEG "
            f"{p['val_vmaf_neg']:.2f} / tOF {p['val_tof']:.4f}" for p in r["curve"]
        ))  # fmt: skip
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.studies.gan", description=__doc__.split("\n\n")[0])
    p.add_argument("--arm", action="append", required=True, metavar="NAME=RUN_DIR")
    p.add_argument("--start", type=Path, required=True, help="the generator every arm started from (init_from)")
    p.add_argument("--unsharp", type=float, default=0.5, help="the unsharp mask's amount for the baseline")
    p.add_argument("--baselines", type=Path, help="read the unsharp baseline from this JSON, or compute and write it")
    p.add_argument("--baselines_only", action="store_true", help="compute --baselines and stop")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "gan_study")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    for spec in a.arm:
        if "=" not in spec:
            p.error(f"--arm takes NAME=RUN_DIR, got {spec!r}")
    runs = [(name, Path(run)) for name, run in (spec.split("=", 1) for spec in a.arm)]
    settings = json.loads((runs[0][1] / "settings.json").read_text())
    dataset = str(VSR_TRAIN)  # the arms trained on it (client_train.py --dataset_path), with extra_datasets
    keep = set(TrainConfig().settings())
    settings = {k: v for k, v in settings.items() if k in keep and k not in ("resume", "init_from")}
    if a.baselines is not None and a.baselines.is_file():
        unsharpened = json.loads(a.baselines.read_text())
    else:
        unsharpened = baselines(a.start, dataset, settings, a.unsharp)
        if a.baselines is not None:
            a.baselines.write_text(json.dumps(unsharpened, indent=1))
    if a.baselines_only:
        print(json.dumps(unsharpened, indent=1))
        return 0
    arms = [arm_row(name, run) for name, run in runs]
    start = {k: arms[0]["curve"][0][k] for k in CURVE_KEYS}  # every arm's step-0 validation: the starting model
    res = {"start": str(a.start), "arms": arms, "baselines": {"start": start, **unsharpened}}
    a.out.parent.mkdir(parents=True, exist_ok=True)
    plot(res, a.out.with_suffix(".png"))
    save_result(a.out, res, markdown(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
