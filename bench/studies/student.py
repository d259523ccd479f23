"""The student study: designs trained from the same start on the same data for the same CPU time, compared by
their validation curves against their own CPU time and by their kept checkpoints on both test lists, clean and
H.264 CRF 23.

Each arm is a ``client_train.py`` run with ``max_cpu_minutes`` (its own CPU time: the process, its DataLoader
workers and the flow cache it used, validation included); its ``advance_settings`` are in the run's
``settings.json``. The curve is the run's validation history (clean bicubic x1/4, both shared test lists'
clips together, the platform's PSNR); the scores come from ``bench.studies.variants.score`` (the degradation
``client_test.py`` uses, models as a server prepares them).

    python -m bench.studies.student --arm A1=runs/models/<uuid> --arm B=runs/models/<uuid> ... \
        [--also shipped=model/pretrained/FRVSR_GAN_default.pth] [--no_score] [--keep bench/results/student_study.json]

``--keep FILE`` carries the arms and scores of an earlier result into this one (an arm given again replaces its
row): run folders live in ``runs/``, which a new machine does not have, so a study that grows over sessions
keeps its finished arms from its saved result.

Saves ``bench/results/student_study.{json,md,png}`` (``--out`` to change).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import torch

from bench.saved import save_result
from common.paths import ROOT, TEST_LISTS

log = logging.getLogger(__name__)
MARKS = (15, 30, 45)  # CPU-minutes at which the curves are read off
DESIGN_KEYS = (
    "channels", "blocks", "hidden", "block", "backward", "flow_cache", "crop_size", "batch_size", "lr", "distill",
)


def history(run: Path) -> list[dict]:
    """A run's validations (finished: ``history.json``; still training: its last ``resume.pt``)."""
    if (run / "history.json").is_file():
        entries = json.loads((run / "history.json").read_text())
    else:
        entries = torch.load(run / "resume.pt", map_location="cpu", weights_only=False)["run_state"]["history"]
    return [h for h in entries if "val_psnr" in h and "own_cpu_seconds" in h]


def kept_checkpoint(run: Path) -> Path:
    found = sorted(p for p in run.glob("FRVSR_GAN_*.pth"))
    if not found:
        raise FileNotFoundError(f"{run} holds no kept checkpoint (FRVSR_GAN_*.pth)")
    return found[0]


def curve_at(points: list[dict], minutes: float) -> float | None:
    """The best validation PSNR reached by ``minutes`` of own CPU time (None before the first validation, and
    where the run has not reached ``minutes`` yet)."""
    if not points or points[-1]["own_cpu_seconds"] < minutes * 60:
        return None
    seen = [h["val_psnr"] for h in points if h["own_cpu_seconds"] <= minutes * 60 + 1e-6]
    return max(seen) if seen else None


def arm_row(name: str, run: Path) -> dict:
    settings = json.loads((run / "settings.json").read_text())
    points = history(run)
    return {
        "arm": name,
        "run": str(run),
        "design": {k: settings.get(k, settings.get("model_args", {}).get(k)) for k in DESIGN_KEYS},
        "settings": settings,
        "curve": [
            {"step": h["step"], "own_cpu_minutes": h["own_cpu_seconds"] / 60, "val_psnr": h["val_psnr"]}
            for h in points
        ],
        "at": {str(m): curve_at(points, m) for m in MARKS},
        "best": max(h["val_psnr"] for h in points) if points else None,
        "steps": points[-1]["step"] if points else 0,
        "own_cpu_minutes": points[-1]["own_cpu_seconds"] / 60 if points else 0.0,
    }


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r in rows:
        c = r["curve"]
        ax.plot([p["own_cpu_minutes"] for p in c], [p["val_psnr"] for p in c], marker="o", label=r["arm"])
    ax.set_xlabel("own CPU-minutes (training, loader, flows, validation)")
    ax.set_ylabel("validation PSNR, dB (clean, both test lists)")
    ax.set_title("Student study: equal CPU budgets from the same start")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def markdown(res: dict) -> str:
    rows = res["arms"]
    lines = [
        "Equal-budget student study (`python -m bench.studies.student`): each arm trained from scratch (BasicVSR's",
        "SPyNet as the flow, frozen) on the same data and seed for the same own CPU time; validation on both test",
        "lists' clips together, clean bicubic x1/4, platform PSNR.",
        "",
        "| arm | design | steps | own CPU-min | " + " | ".join(f"val @ {m} min" for m in MARKS) + " | best val |",
        "|---|---|---:|---:|" + "---:|" * len(MARKS) + "---:|",
    ]
    for r in rows:
        design = ", ".join(f"{k} {v}" for k, v in r["design"].items() if v is not None)
        at = " | ".join("-" if r["at"][str(m)] is None else f"{r['at'][str(m)]:.3f}" for m in MARKS)
        best = "-" if r["best"] is None else f"{r['best']:.3f}"
        lines.append(f"| {r['arm']} | {design} | {r['steps']} | {r['own_cpu_minutes']:.1f} | {at} | {best} |")
    if res.get("scores"):
        conds = list(next(iter(res["scores"].values())).keys())
        lines += [
            "",
            "The kept checkpoints, gain over bicubic on the same decoded frames (dB; as a server prepares them):",
            "",
            "| arm | " + " | ".join(conds) + " |",
            "|---|" + "---:|" * len(conds) + "",
        ]
        for name, s in res["scores"].items():
            lines.append(f"| {name} | " + " | ".join(f"{s[c]:+.3f}" for c in conds) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.studies.student", description=__doc__.split("\n\n")[0])
    p.add_argument("--arm", action="append", default=[], help="NAME=RUN_DIR (a runs/models/<uuid> folder)")
    p.add_argument("--keep", type=Path, help="an earlier result (.json) whose arms and scores this one carries")
    p.add_argument("--no_score", action="store_true", help="curves only: do not score the kept checkpoints")
    p.add_argument("--also", action="append", default=[], help="NAME=CKPT: a reference scored beside the arms")
    p.add_argument("--scores", type=Path, help="with --no_score: scores saved earlier (bench.studies.variants.score)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "student_study")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not a.arm and not a.keep:
        p.error("give at least one --arm NAME=RUN_DIR, or --keep an earlier result")
    arms = dict(item.split("=", 1) for item in a.arm)
    rows = [arm_row(name, Path(run)) for name, run in arms.items()]
    kept = json.loads(a.keep.read_text()) if a.keep else {"arms": [], "scores": {}}
    rows = [r for r in kept["arms"] if r["arm"] not in arms] + rows
    res: dict = {"arms": rows}
    if a.no_score and a.scores:
        res["scores"] = json.loads(a.scores.read_text())
    if not a.no_score:
        from bench.studies.variants import score

        missing = [str(f) for f in TEST_LISTS.values() if not f.is_dir()]
        if missing:
            print(f"skipped the scores: the shared test lists are not here ({', '.join(missing)})", file=sys.stderr)
        else:
            torch.set_num_threads(a.threads)
            nets = {name: kept_checkpoint(Path(run)) for name, run in arms.items()}
            nets.update({name: Path(p) for name, p in (item.split("=", 1) for item in a.also)})
            res["scores"] = score(nets, (23,), TEST_LISTS)
    if kept.get("scores"):
        fresh = res.get("scores", {})
        earlier = {k: v for k, v in kept["scores"].items() if k not in fresh and k not in arms}  # a rerun arm's: stale
        res["scores"] = {**earlier, **fresh}
    a.out.parent.mkdir(parents=True, exist_ok=True)
    plot(rows, a.out.with_suffix(".png"))
    save_result(a.out, res, markdown(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
