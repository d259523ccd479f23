"""`make bench`: model speed and quality per configuration, end-to-end latency through the route,
the TorchServe worker's peak memory, and the served pipeline's per-frame budget (``bench.budget``). Writes
bench/results/bench.md, bench.json and speed_vs_psnr.png.

    OMP_WAIT_POLICY=PASSIVE python -m bench.run_bench    # everything (quality: 90 s of training per config)
    OMP_WAIT_POLICY=PASSIVE python -m bench.run_bench --train_seconds 0       # speed only
    OMP_WAIT_POLICY=PASSIVE python -m bench.run_bench --skip-e2e

OpenMP reads ``OMP_WAIT_POLICY`` when torch loads, so it is set by the caller (``make bench`` does), as the
serving workers run; the script warns when it is not.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
import torch

from bench.models import CANDIDATES, degradation_cost, reference_quality, run_model_bench, shipped_default
from common.files import atomic_path, atomic_write_text
from common.paths import DEFAULT_MODEL, ROOT, TEST_LISTS, VIMEO_SAMPLE
from model.frvsr import FRVSR
from train.degradations import EVAL_CRF

log = logging.getLogger(__name__)
RESULTS = ROOT / "bench" / "results"
SHARED = VIMEO_SAMPLE


class PeakRSS:
    """Polls the peak RSS of TorchServe worker processes (model_service_worker) in a thread."""

    def __init__(self, interval: float = 0.05):
        self.interval, self.peak, self._stop = interval, 0, threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for p in psutil.process_iter(["cmdline"]):
                try:
                    if any("model_service_worker" in c for c in (p.info["cmdline"] or [])):
                        self.peak = max(self.peak, p.memory_info().rss)
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    pass
            time.sleep(self.interval)

    def __enter__(self):
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()


E2E_CLIPS = ((176, 144, 5.0), (200, 200, 5.0))  # the two clips of the speed targets: 5 s at 30 fps


def end_to_end(model, clips=E2E_CLIPS, repeat: int = 3) -> list[dict]:
    """Each clip through /autotable/predict on a fresh service serving ``model`` (a checkpoint file or a module):
    the median of ``repeat`` requests, the first and second request's wall times, the worker's peak RSS."""
    from bench import measure as m
    from model.checkpoint import save_checkpoint
    from model.inference import time_super_resolve
    from model.quantize import load_for_serving
    from testing.clips import encode_video, moving_clip
    from video.settings import HandlerSettings

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        if not isinstance(model, Path):
            save_checkpoint(Path(tmp) / "model.pth", model)
            model = Path(tmp) / "model.pth"
        served, precision, _ = load_for_serving(model)  # as a serving worker prepares it: "model alone" times that
        net = served.models["clean"]
        for w, h, secs in clips:
            clip = moving_clip(int(secs * 30), h, w)
            video = encode_video(clip, "mp4_h264", fps=30)
            extra = ["--max_seconds", str(secs + 1), "--max_frames", str(len(clip) + 10)]
            with PeakRSS() as rss:
                runs = m.measure(f"{w}x{h}", video, repeat, Path(tmp) / f"{w}x{h}", extra, model=model)
            torch.set_num_threads(len(os.sched_getaffinity(0)))
            frames = list(clip)
            alone = time_super_resolve(net, frames, precision=precision) * len(frames) / (len(frames) - 1)
            med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
            rows.append(
                {
                    "size": f"{w}x{h}",
                    "seconds": secs,
                    "frames": len(clip),
                    "precision": precision,
                    "flow_ahead": HandlerSettings().flow_ahead,
                    "wall": med["wall"],
                    "first_wall": runs[0]["wall"],
                    "second_wall": runs[1]["wall"] if len(runs) > 1 else None,
                    "decode": med["decode"],
                    "model": med["model"],
                    "encode": med["encode"],
                    "worker_total": med["total"],
                    "transport": med["wall"] - med["total"],
                    "model_alone": alone,
                    "not_model_share": (med["wall"] - alone) / med["wall"],
                    "peak_rss_mb": rss.peak / 2**20,
                }
            )
            log.info("end to end %s: %s", rows[-1]["size"], {k: v for k, v in rows[-1].items() if k != "size"})
    return rows


def chart(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = [r for r in rows if r.get("psnr") is not None and r["name"] != "shipped default"]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r in pts:
        ax.scatter(r["ms_176x144"], r["psnr"])
        ax.annotate(r["name"], (r["ms_176x144"], r["psnr"]), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.set(
        xscale="log",
        xlabel="ms/frame at 176x144 (2 CPU cores, log)",
        ylabel="val PSNR after equal training (dB)",
        title="FRVSR configurations: speed vs quality",
    )
    ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(path, keep_suffix=True) as tmp:
        fig.savefig(tmp, dpi=90)
    plt.close(fig)


def reference_markdown(refs: list[dict]) -> str:
    if not refs:
        return ""
    out = [
        "",
        "### The teacher and the shipped default on both shared test lists (platform PSNR, dB; gain over bicubic "
        "on the same input; BI x1/4, and that input H.264 CRF 23). The paper's Vimeo-90K-T figure for the "
        "teacher's weights: 37.18 dB (Y, the full test set; the 4-clip sample differs and may overlap its "
        "training clips)",
        "",
        "| model | ms/frame 176x144 | list | clean | gain | CRF 23 | gain |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in refs:
        for name in TEST_LISTS:
            q = r[name]
            out.append(
                f"| {r['name']} | {r['ms_176x144']:.0f} | {name} | {q['clean']['model']:.3f} | "
                f"{q['clean']['gain']:+.3f} | {q[f'crf{EVAL_CRF}']['model']:.3f} | {q[f'crf{EVAL_CRF}']['gain']:+.3f} |"
            )
    return "\n".join(out) + "\n"


def markdown(
    rows: list[dict], e2e: list[dict], train_seconds: float, machine: str, degr: list[dict] | None = None
) -> str:
    out = [
        f"Machine: {machine}. torch {torch.__version__}, {torch.get_num_threads()} threads.",
        "",
        f"### Model speed (ms/frame, median of 3 runs of an 8-frame clip after warm-up) and platform PSNR on the Vimeo "
        f"test list (BI input, and the same input H.264-compressed at CRF 23) after {train_seconds:.0f} s of training "
        "(the shipped default: after its full training)",
        "",
        "| config | params | runtime | ms/frame 176x144 | x faster | ms/frame 200x200 | x faster | PSNR clean (dB) "
        "| PSNR H.264 CRF 23 (dB) | steps in the time | note |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        psnr = f"{r['psnr']:.3f}" if r.get("psnr") is not None else "-"
        psnr23 = f"{r['psnr_crf23']:.3f}" if r.get("psnr_crf23") is not None else "-"
        out.append(
            f"| {r['name']} | {r['params'] / 1e6:.2f} M | {r['runtime']} | {r['ms_176x144']:.1f} | "
            f"{r['speedup_176x144']:.1f} | {r['ms_200x200']:.1f} | {r['speedup_200x200']:.1f} | {psnr} | {psnr23} "
            f"| {r.get('train_steps', '-')} | {r['note']} |"
        )
    if e2e:
        out += [
            "",
            f"### End to end: 30 fps clips through POST /autotable/predict (the shipped default, precision "
            f"{e2e[0]['precision']}, flow {e2e[0]['flow_ahead']} frames ahead; median of the requests after a fresh "
            "start; first and second request)",
            "",
            "| clip | wall s | first s | second s | decode s | model s | encode s | transport s | model alone s | "
            "not-model share | worker peak RSS MB |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for e in e2e:
            second = f"{e['second_wall']:.2f}" if e.get("second_wall") is not None else "-"
            out.append(
                f"| {e['size']}, {e['seconds']:.0f} s ({e['frames']} frames) | {e['wall']:.2f} | {e['first_wall']:.2f} "
                f"| {second} | {e['decode']:.2f} | {e['model']:.2f} | {e['encode']:.2f} | {e['transport']:.2f} | "
                f"{e['model_alone']:.2f} | {e['not_model_share']:.0%} | {e['peak_rss_mb']:.0f} |"
            )
        out.append(
            "\n(decode, model and encode overlap inside the worker; transport = wall - worker total: base64, JSON, "
            "proxy, TorchServe hop.)"
        )
    if degr:
        d0 = degr[0]
        out += [
            "",
            f"### Training cost of the degradation (default model, batch {d0['batch']}, {d0['frames']}-frame windows "
            f"of {d0['crop']} px, "
            f"{d0['workers']} DataLoader worker)",
            "",
            "| degradation | ms to make one window | s/step | steps/s |",
            "|---|---|---|---|",
        ]
        for d in degr:
            out.append(f"| {d['degradation']} | {d['window_ms']:.1f} | {d['step_s']:.3f} | {1 / d['step_s']:.2f} |")
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--train_seconds",
        type=float,
        default=90,
        help="seconds of training per configuration for the quality column (equal time; 0: skip)",
    )
    p.add_argument("--skip-e2e", action="store_true")
    p.add_argument("--skip-budget", action="store_true", help="skip the per-frame budget (bench.budget)")
    p.add_argument("--skip-runtimes", action="store_true", help="skip bf16 vs int8 vs compiled (bench.runtimes)")
    p.add_argument("--skip-flow", action="store_true", help="skip the flow options' warp PSNR (bench.warp_psnr)")
    p.add_argument(
        "--skip-perceptual", action="store_true", help="skip VMAF, VMAF NEG, BRISQUE, tOF per model (bench.perceptual)"
    )
    p.add_argument(
        "--skip-teacher", action="store_true", help="skip the teacher and the shipped default on both test lists"
    )
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if os.environ.get("OMP_WAIT_POLICY", "").upper() != "PASSIVE":
        logging.warning(
            "OMP_WAIT_POLICY is not PASSIVE: in-process timings will not match the serving workers (use make bench)"
        )
    torch.set_num_threads(len(os.sched_getaffinity(0)))
    dataset = SHARED if SHARED.is_dir() else None
    if dataset is None and a.train_seconds:
        print(f"note: {SHARED} not found: the quality column is skipped", file=sys.stderr)
    rows = run_model_bench(dataset, a.train_seconds)
    default = shipped_default()
    model = default[0] if default else FRVSR(next(c.cfg for c in CANDIDATES if c.name == "ps-8-48-f12-h32"))
    e2e = [] if a.skip_e2e else end_to_end(DEFAULT_MODEL if default else model)  # the file: both of its models
    degr = degradation_cost(dataset) if dataset is not None and a.train_seconds else None
    from model.precision import resolve_precision

    machine = (
        f"{platform.processor() or platform.machine()}, {len(os.sched_getaffinity(0))} cores, "
        f"{psutil.virtual_memory().total / 2**30:.0f} GiB; "
        f"precision auto = {resolve_precision('auto', 'cpu')} on this CPU"
    )
    refs = reference_quality(TEST_LISTS) if all(p.is_dir() for p in TEST_LISTS.values()) and not a.skip_teacher else []
    spent = None
    if default and not a.skip_budget:  # core-ms a frame per piece of the served pipeline, 150-frame clips
        from bench import budget

        spent = budget.run(DEFAULT_MODEL)
        torch.set_num_threads(len(os.sched_getaffinity(0)))
    rt = None
    if default and not a.skip_runtimes:  # bf16 vs int8 vs compiled, FRVSR and the teacher (bench.runtimes)
        from bench import runtimes

        lists = {k: v for k, v in TEST_LISTS.items() if v.is_dir()}
        teacher = None if a.skip_teacher else {k: v for k, v in lists.items() if k == "vimeo"}
        given = runtimes.TEACHER if runtimes.TEACHER.is_file() else None
        rt = runtimes.run(DEFAULT_MODEL, lists, teacher, frames=12, rounds=3, teacher=given)
    flows = None
    if all(p.is_dir() for p in TEST_LISTS.values()) and not a.skip_flow:  # warp PSNR of the flow options, in bf16
        from bench import warp_psnr

        flows = warp_psnr.run([str(p) for p in TEST_LISTS.values()], [], threads=1, precisions=("bf16",))
        torch.set_num_threads(len(os.sched_getaffinity(0)))
    sharp = None
    if all(p.is_dir() for p in TEST_LISTS.values()) and not a.skip_perceptual:  # default, unsharp, GAN, teacher
        from bench import perceptual

        sharp = perceptual.run(TEST_LISTS, teacher=not a.skip_teacher)
    md = markdown(rows, e2e, a.train_seconds, machine, degr) + reference_markdown(refs)
    if sharp is not None:
        md += "\n" + perceptual.markdown(sharp, title="## Sharpness, naturalness and flicker (bench.perceptual)")
    if spent is not None:
        md += "\n" + budget.markdown(spent, title="## The per-frame budget (bench.budget)")
    if flows is not None:
        md += "\n" + warp_psnr.markdown(flows, title="## Flow options (bench.warp_psnr)")
    if rt is not None:
        md += "\n## Runtimes (bench.runtimes)\n\n" + runtimes.markdown(rt)
    atomic_write_text(RESULTS / "bench.md", md)
    doc = {
        "models": rows, "e2e": e2e, "degradation": degr, "references": refs, "flows": flows, "runtimes": rt,
        "budget": spent, "perceptual": sharp,
        "machine": machine,
    }  # fmt: skip
    atomic_write_text(RESULTS / "bench.json", json.dumps(doc, indent=2, default=str))
    chart(rows, RESULTS / "speed_vs_psnr.png")
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
