"""The result files the platform reads: trial.txt of a training run (``build_trial``) and of an
evaluation run (``build_test_trial``), and the evaluation workbook that client_test.py writes."""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from pathlib import Path

from openpyxl import Workbook
from openpyxl.chart import BarChart, Reference
from openpyxl.utils import get_column_letter

from common.files import atomic_path, atomic_write_bytes
from train.evaluate import ClipResult
from train.metrics import MSE_SCALE, PSNR_CAP, Aggregate, Exact, psnr_from_mse
from train.results import MODEL_NAME, atomic_write_json, trial_path

PER_SAMPLE_COLUMNS = [
    "sample",
    "frames",
    "size",
    "MSE",
    "PSNR",
    "SSIM",
    "PSNR_Y",
    "tOF",
    "VMAF",
    "VMAF_NEG",
    "BRISQUE",
    "bicubic PSNR",
    "bicubic SSIM",
    "bicubic PSNR_Y",
    "bicubic tOF",
    "bicubic VMAF",
    "bicubic VMAF_NEG",
    "bicubic BRISQUE",
    "ground truth BRISQUE",
    "seconds",
]
# tOF (train.metrics.tof): temporal consistency, mean flow difference to the ground truth in pixels, lower is better;
# VMAF, VMAF_NEG (0-100, higher is better) and BRISQUE (lower is more natural): train.metrics
SUMMARY_COLUMNS = [
    "method", "MSE", "PSNR", "SSIM", "SSIMs", "PSNR_Y", "tOF", "samples", "PSNR_clip_mean", "VMAF", "VMAF_NEG",
    "BRISQUE",
]  # fmt: skip
GROUND_TRUTH = "ground truth"  # the summary's entry for the ground truth itself: its BRISQUE alone
NOTES = {
    "MSE": "on the 8-bit scale (0-255^2, as MATLAB's immse and OpenCV give for 8-bit images); PSNR = 10*log10(255^2 "
    "/ MSE)",
    "tOF": "temporal consistency: mean |flow(output) - flow(ground truth)| in pixels over consecutive frames "
    "(Farneback); lower is better, 0 = moves like the ground truth",
    "VMAF": "Netflix VMAF v0.6.1 (vmaf-torch) on 8-bit BT.601 luma, per frame clipped to 0-100, mean over the clip; "
    "higher is better; counts sharpening as quality",
    "VMAF_NEG": "VMAF NEG: VMAF with no enhancement gain (sharpening is not rewarded); higher is better",
    "BRISQUE": "no-reference naturalness per frame (8-bit RGB), mean over the clip; lower is more natural. The "
    "ground truth's own is the row 'ground truth': the nearer a method's, the more natural it looks",
}


def summarize(results: Sequence[ClipResult]) -> dict[str, dict]:
    """{'FRVSR_GAN': {...}, 'Bicubic': {...}, 'ground truth': {'BRISQUE': ...}}: per method MSE, SSIMs, PSNR,
    SSIM plus PSNR_Y, tOF, PSNR_clip_mean, VMAF, VMAF_NEG and BRISQUE (each a mean over clips; nan where not
    computed); for the ground truth its BRISQUE."""
    out = {}
    for key, pick in ((MODEL_NAME, lambda r: r.model), ("Bicubic", lambda r: r.bicubic)):
        agg = Aggregate()
        for r in results:
            agg.add(pick(r))
        # PSNR_clip_mean: mean of per-clip PSNRs (papers' convention); PSNR (the platform's) is of the mean MSE
        clip_mean = sum(min(pick(r).psnr, PSNR_CAP) for r in results) / len(results)
        out[key] = {
            **agg.result(), "PSNR_Y": agg.psnr_y(), "tOF": agg.tof(), "PSNR_clip_mean": clip_mean,
            "VMAF": agg.vmaf(), "VMAF_NEG": agg.vmaf_neg(), "BRISQUE": agg.brisque(),
        }  # fmt: skip
    gt = [r.gt_brisque for r in results if not math.isnan(r.gt_brisque)]
    out[GROUND_TRUTH] = {"BRISQUE": sum(gt) / len(gt) if gt else float("nan")}
    return out


def _num(v: float) -> float | str:
    """Rounded; ``inf`` (perfect PSNR) and ``nan`` (not computed) as text, which Excel shows as is."""
    return "inf" if v == float("inf") else "nan" if v != v else round(v, 4)


def write_workbook(
    path: Path,
    results: Sequence[ClipResult],
    summary: dict,
    info: dict,
    compressed: dict[str, tuple[Sequence[ClipResult], dict]] | None = None,
) -> None:
    """Per-sample sheet, summary sheet and a per-sample PSNR chart (model vs bicubic) for the clean input;
    one more sheet per entry of ``compressed`` ({sheet name: (results, summary)}, e.g. H.264 CRF 23 input),
    holding its per-sample rows and its summary; atomic."""
    wb = Workbook()
    ws = wb.active
    ws.title = "per_sample"
    _per_sample_rows(ws, results)
    chart = BarChart()
    chart.title = "PSNR per sample: model vs bicubic"
    chart.y_axis.title = "PSNR (dB)"
    n = len(results)
    for col in (PER_SAMPLE_COLUMNS.index("PSNR") + 1, PER_SAMPLE_COLUMNS.index("bicubic PSNR") + 1):
        chart.add_data(Reference(ws, min_col=col, min_row=1, max_row=n + 1), titles_from_data=True)
    chart.set_categories(Reference(ws, min_col=1, min_row=2, max_row=n + 1))
    chart.width, chart.height = 24, 10
    ws.add_chart(chart, f"A{n + 4}")

    sm = wb.create_sheet("summary")
    _summary_rows(sm, summary, n)
    sm.append([])
    for name, note in NOTES.items():
        sm.append([name, note])
    sm.append([])
    for k, v in info.items():
        sm.append([k, str(v)])
    sm.column_dimensions["A"].width = 22
    for name, (res, summ) in (compressed or {}).items():
        cs = wb.create_sheet(name)
        _per_sample_rows(cs, res)
        cs.append([])
        _summary_rows(cs, summ, len(res))
    buf = io.BytesIO()
    wb.save(buf)
    atomic_write_bytes(path, buf.getvalue())


def _per_sample_rows(ws, results: Sequence[ClipResult]) -> None:
    ws.append(PER_SAMPLE_COLUMNS)
    for r in results:
        ws.append(
            [
                r.name,
                r.frames,
                f"{r.size[0]}x{r.size[1]}",
                round(r.model.mse * MSE_SCALE, 4),
                _num(r.model.psnr),
                round(r.model.ssim, 4),
                _num(psnr_from_mse(r.model.mse_y)),
                _num(r.model.tof),
                _num(r.model.vmaf),
                _num(r.model.vmaf_neg),
                _num(r.model.brisque),
                _num(r.bicubic.psnr),
                round(r.bicubic.ssim, 4),
                _num(psnr_from_mse(r.bicubic.mse_y)),
                _num(r.bicubic.tof),
                _num(r.bicubic.vmaf),
                _num(r.bicubic.vmaf_neg),
                _num(r.bicubic.brisque),
                _num(r.gt_brisque),
                round(r.seconds, 3),
            ]
        )
    for i, name in enumerate(PER_SAMPLE_COLUMNS, start=1):
        ws.column_dimensions[get_column_letter(i)].width = 18 if name == "sample" else max(8, len(name) + 2)


def _summary_rows(ws, summary: dict, n: int) -> None:
    ws.append(SUMMARY_COLUMNS)
    for name, s in summary.items():
        if name == GROUND_TRUTH:  # its BRISQUE alone, under the methods' column
            ws.append([name, *[None] * (SUMMARY_COLUMNS.index("BRISQUE") - 1), _num(s["BRISQUE"])])
            continue
        ws.append(
            [
                name,
                round(s["MSE"], 4),
                _num(s["PSNR"]),
                round(s["SSIM"], 4),
                round(s["SSIMs"], 4),
                _num(s["PSNR_Y"]),
                _num(s["tOF"]),
                n,
                _num(s["PSNR_clip_mean"]),
                _num(s["VMAF"]),
                _num(s["VMAF_NEG"]),
                _num(s["BRISQUE"]),
            ]
        )


def build_test_trial(
    out_dir: Path, xlsx_name: str, summary: dict, seconds: float, compressed: dict[str, dict] | None = None
) -> dict:
    """The platform's trial.txt for an evaluation run (field names are a contract).

    ``test`` under each method is the clean input; each entry of ``compressed`` ({key: summary}, keys such
    as ``test_h264_crf23``) adds the same four metrics beside it for that compressed input."""
    keys = ("MSE", "SSIMs", "PSNR", "SSIM")
    conditions = {"test": summary, **(compressed or {})}
    methods = [name for name in summary if name != GROUND_TRUTH]  # the contract's two, FRVSR_GAN and Bicubic
    return {
        "model_path": str(out_dir.resolve()),
        "predict_result_filename": xlsx_name,
        "preview_data": {},
        "test_result": {
            name: {cond: {k: summ[name][k] for k in keys} for cond, summ in conditions.items()} for name in methods
        },
        "predict_prob": {},
        "test_consuming": {"test": seconds},
    }


def build_trial(trial_name: str, out_dir: Path, model_params: dict, scores: dict, consuming: dict) -> dict:
    """The platform's trial.txt for a training run (field names are a contract).

    ``model_params``: the flat settings and ``model_args``; ``scores``: the kept checkpoint's validation
    {MSE, SSIMs, PSNR, SSIM}; ``consuming``: {total, train_time, valid_time} in seconds.
    """
    return {
        "recom_model": MODEL_NAME,
        "gened_model_name": f"{MODEL_NAME}_{trial_name}",
        "metric_type": "PSNR",
        "metric_value": scores.get("PSNR"),
        "used_models": MODEL_NAME,
        "model_path": str(out_dir.resolve()),
        "model_params": Exact(model_params),
        "eval_result": {MODEL_NAME: {"eval": {k: scores.get(k) for k in ("MSE", "SSIMs", "PSNR", "SSIM")}}},
        "predict_prob": {},
        "train_consuming": consuming,
    }


def plot_curves(history: list[dict], path: Path) -> None:
    """Training loss and validation PSNR against steps, as a PNG (atomically)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
    steps = [h["step"] for h in history if "loss" in h]
    a1.plot(steps, [h["loss"] for h in history if "loss" in h])
    a1.set(xlabel="step", ylabel="training loss (epoch mean)", yscale="log", title="loss")
    val = [h for h in history if "val_psnr" in h]
    a2.plot([h["step"] for h in val], [h["val_psnr"] for h in val], marker="o")
    gan_title = "validation PSNR (step 0: the GAN stage's starting model)"
    a2.set(xlabel="step", ylabel="PSNR (dB)", title=gan_title if val and val[0]["step"] == 0 else "validation PSNR")
    fig.tight_layout()
    with atomic_path(path, keep_suffix=True) as tmp:
        fig.savefig(tmp, dpi=80)
    plt.close(fig)


def write_test_results(
    out_dir: Path, runs: dict[int | None, list[ClipResult]], info: dict, seconds: float, stamp: int
) -> tuple[Path, dict]:
    """``client_test.py``'s files: ``out_dir/evaluation_{stamp}.xlsx`` (clean input first, a sheet per CRF)
    and ``runs/metric/trial.txt``; returns the workbook's path and the summaries per condition."""
    summaries = {crf: summarize(res) for crf, res in runs.items()}
    xlsx_name = f"evaluation_{stamp}.xlsx"
    sheets = {f"h264_crf{crf}": (runs[crf], summaries[crf]) for crf in runs if crf is not None}
    write_workbook(out_dir / xlsx_name, runs[None], summaries[None], info, sheets)
    extra = {f"test_h264_crf{crf}": summaries[crf] for crf in runs if crf is not None}
    atomic_write_json(trial_path(), build_test_trial(out_dir, xlsx_name, summaries[None], seconds, extra))
    return out_dir / xlsx_name, summaries
