"""Model-level benchmark: ms/frame of each configuration and its PSNR after the same short training.

Both measurements call the product's own code: ``super_resolve`` (the one inference path) for speed,
``TrainClips`` + ``train_step`` + ``evaluate`` (the training code) for quality.
"""

from __future__ import annotations

import logging
import random
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from common.paths import DEFAULT_MODEL, ROOT
from model.checkpoint import load_checkpoint
from model.frvsr import FRVSR, FRVSRConfig
from model.inference import time_super_resolve
from model.quantize import load_for_serving
from model.variants import CLEAN, ModelSet
from train.config import TrainConfig
from train.data import TrainClips, discover_samples, split_samples
from train.degradations import EVAL_CRF
from train.evaluate import evaluate_clips, evaluate_conditions, test_samples
from train.metrics import Aggregate
from train.report import summarize
from train.trainer import train_step

log = logging.getLogger(__name__)


@dataclass
class Candidate:
    name: str
    cfg: FRVSRConfig
    note: str
    # False: fp32, NCHW weights (how FRVSR is commonly run); True: as served (precision auto, NHWC)
    serving_path: bool = True


CANDIDATES = [
    Candidate(
        "ref-10-64",
        FRVSRConfig(channels=64, blocks=10, fnet_channels=32, upsampler="deconv", residual=False, hidden=0),
        "reference: the common FRVSR 10-64 (2 transposed convs at high res), fp32 NCHW",
        serving_path=False,
    ),
    Candidate(
        "ps-10-64",
        FRVSRConfig(channels=64, blocks=10, fnet_channels=32, hidden=0),
        "10-64 with pixel-shuffle at low res + bicubic residual",
    ),
    Candidate("ps-4-32-f8", FRVSRConfig(channels=32, blocks=4, fnet_channels=8, hidden=0), "the previous default"),
    Candidate(
        "ps-8-48-f12",
        FRVSRConfig(channels=48, blocks=8, fnet_channels=12, hidden=0),
        "the new default without the hidden state",
    ),
    Candidate(
        "ps-8-48-f12-h32",
        FRVSRConfig(channels=48, blocks=8, fnet_channels=12, hidden=32),
        "the new default: + 32-channel feature state warped along the recurrence",
    ),
    Candidate("ps-8-64-f16-h32", FRVSRConfig(channels=64, blocks=8, fnet_channels=16, hidden=32), "wider candidate"),
    Candidate("ps-2-32-f8", FRVSRConfig(channels=32, blocks=2, fnet_channels=8, hidden=0), "real-time candidate"),
]


def frame_ms(
    cfg_or_model, width: int, height: int, frames: int = 8, repeats: int = 3, serving_path: bool = True
) -> float:
    """Median over ``repeats`` of the per-frame time of ``super_resolve`` on a random ``frames``-frame clip
    (after one warm-up frame).

    ``serving_path``: NHWC weights and ``precision="auto"`` (bf16 or fp32: the candidates are configurations, with
    no int8 programs, compared with each other at one runtime); otherwise NCHW fp32. A checkpoint as a request gets
    it: ``served_frame_ms``.
    """
    model = cfg_or_model if isinstance(cfg_or_model, torch.nn.Module) else FRVSR(cfg_or_model).eval()
    model = model.to(memory_format=torch.channels_last if serving_path else torch.contiguous_format)
    precision = "auto" if serving_path else "fp32"
    rng = np.random.default_rng(0)
    clip = [rng.integers(0, 256, (height, width, 3), dtype=np.uint8) for _ in range(frames + 1)]
    times = [time_super_resolve(model, clip, precision=precision) / frames * 1000 for _ in range(repeats)]
    return statistics.median(times)


def test_list_psnr(model: FRVSR, dataset: Path, crf: int | None = None) -> float:
    """Platform PSNR on the dataset's test list, BI input (H.264-compressed at ``crf`` when given)."""
    _, val_s = split_samples(dataset, discover_samples(dataset), 0.2, 0)
    agg = Aggregate()
    for r in evaluate_clips(model.eval(), val_s, "bicubic", "cpu", crf=crf):
        agg.add(r.model)
    return agg.result()["PSNR"]


def train_for(cfg: FRVSRConfig, dataset: Path, seconds: float, seed: int = 0) -> tuple[FRVSR, int]:
    """Train ``cfg`` for ``seconds`` of training steps (same data, seed and learning rate for every
    candidate: equal training time, as a user with a time budget gets); (model, steps it reached)."""
    tc = TrainConfig(
        batch_size=4,
        lr=5e-4,
        crop_size=64,
        num_frames=5,
        crops_per_clip=64,
        seed=seed,
        degradation="bicubic",
        model=cfg,
    )
    random.seed(seed)
    torch.manual_seed(seed)
    samples = discover_samples(dataset)
    train_s, val_s = split_samples(dataset, samples, tc.val_split, seed)
    data = TrainClips(train_s, tc.num_frames, tc.crop_size, tc.degradation, tc.crops_per_clip)
    loader = torch.utils.data.DataLoader(data, batch_size=tc.batch_size, shuffle=True, drop_last=True)
    model = FRVSR(cfg).train()
    opt = torch.optim.Adam(model.parameters(), lr=tc.lr)
    done, spent = 0, 0.0
    while spent < seconds:
        for lr_b, hr_b in loader:
            t0 = time.perf_counter()
            train_step(model, opt, lr_b, hr_b, tc)
            spent += time.perf_counter() - t0
            done += 1
            if spent >= seconds:
                break
    return model.eval(), done


def shipped_default() -> tuple[FRVSR, dict] | None:
    """The shipped default's clean model unprepared (fp32 weights), for the rows that compare it with the candidate
    configurations at their runtime (``frame_ms``); what a request gets is ``load_for_serving``'s
    (``reference_quality``, ``run_bench.end_to_end``)."""
    return load_checkpoint(DEFAULT_MODEL) if DEFAULT_MODEL.is_file() else None


def run_model_bench(dataset: Path | None, train_seconds: float, sizes=((176, 144), (200, 200))) -> list[dict]:
    """One row per configuration: ms/frame per size, ratio to the reference, PSNR after ``train_seconds``
    of training."""
    rows = []
    entries = [(c, None) for c in CANDIDATES]
    default = shipped_default()
    if default is not None:
        entries.append(
            (
                Candidate("shipped default", default[0].cfg, f"{DEFAULT_MODEL.relative_to(ROOT)} (its full training)"),
                default,
            )
        )
    for c, loaded in entries:
        name, cfg = c.name, c.cfg
        row = {
            "name": name,
            "note": c.note,
            "config": asdict(cfg),
            "params": sum(p.numel() for p in FRVSR(cfg).parameters()),
            "runtime": "precision auto, NHWC" if c.serving_path else "fp32, NCHW",
        }
        for w, h in sizes:
            row[f"ms_{w}x{h}"] = frame_ms(loaded[0] if loaded else cfg, w, h, serving_path=c.serving_path)
            log.info("%s %dx%d: %.1f ms/frame", name, w, h, row[f"ms_{w}x{h}"])
        model = loaded[0] if loaded is not None else None
        if loaded is None and dataset is not None and train_seconds > 0:
            model, row["train_steps"] = train_for(cfg, dataset, train_seconds)
        if model is not None and dataset is not None:
            row["psnr"], row["psnr_crf23"] = test_list_psnr(model, dataset), test_list_psnr(model, dataset, EVAL_CRF)
            log.info("%s: PSNR %.3f dB clean, %.3f dB at CRF %d", name, row["psnr"], row["psnr_crf23"], EVAL_CRF)
        if loaded is not None:
            row["train_note"] = "its full training"
        rows.append(row)
    ref = rows[0]
    for r in rows:
        for w, h in sizes:
            r[f"speedup_{w}x{h}"] = ref[f"ms_{w}x{h}"] / r[f"ms_{w}x{h}"]
    return rows


def degradation_cost(dataset: Path, steps: int = 30) -> list[dict]:
    """What the ``realistic`` degradation costs training: ms to make one training window in the data
    pipeline, and seconds per step of the default model with the degradation in one DataLoader worker
    (as ``client_train.py`` runs it), each against ``bicubic`` on the same clips and settings."""
    tc0 = TrainConfig(seed=0)
    samples, _ = split_samples(dataset, discover_samples(dataset), tc0.val_split, 0)
    rows = []
    for kind in ("bicubic", "realistic"):
        tc = TrainConfig(seed=0, degradation=kind, threads=torch.get_num_threads())
        data = TrainClips(samples, tc.num_frames, tc.crop_size, kind, tc.crops_per_clip)
        random.seed(0)
        t0 = time.perf_counter()
        for i in range(64):
            data[i % len(data)]
        window_ms = (time.perf_counter() - t0) / 64 * 1000
        loader = torch.utils.data.DataLoader(
            data,
            batch_size=tc.batch_size,
            shuffle=True,
            drop_last=True,
            num_workers=tc.workers,
            persistent_workers=True,
        )
        torch.manual_seed(0)
        model = FRVSR(tc.model).to(memory_format=torch.channels_last).train()
        opt = torch.optim.Adam(model.parameters(), lr=tc.lr)
        it = iter(loader)
        train_step(model, opt, *next(it), tc)  # warm-up (and the worker's first batches)
        t0 = time.perf_counter()
        for _ in range(steps):
            try:
                batch = next(it)
            except StopIteration:
                it = iter(loader)
                batch = next(it)
            train_step(model, opt, *batch, tc)
        rows.append(
            {
                "degradation": kind,
                "window_ms": window_ms,
                "step_s": (time.perf_counter() - t0) / steps,
                "batch": tc.batch_size,
                "frames": tc.num_frames,
                "crop": tc.crop_size,
                "workers": tc.workers,
            }
        )
        log.info("%s: %.1f ms/window, %.3f s/step", kind, window_ms, rows[-1]["step_s"])
    return rows


def list_quality(model, dataset: Path, crfs: tuple[int, ...] = (EVAL_CRF,), precision: str = "auto") -> dict:
    """Platform PSNR of ``model`` and of bicubic on ``dataset``'s test list, clean BI input and each H.264
    CRF, through ``client_test.py``'s own code (``train.evaluate``); plus the model's seconds per frame there."""
    samples = test_samples(dataset)
    runs = evaluate_conditions(
        model if isinstance(model, ModelSet) else model.eval(), samples, "bicubic", "cpu", list(crfs),
        precision=precision,
    )  # fmt: skip
    out = {}
    for crf, results in runs.items():
        s = summarize(results)
        out["clean" if crf is None else f"crf{crf}"] = {
            "model": s["FRVSR_GAN"]["PSNR"],
            "bicubic": s["Bicubic"]["PSNR"],
            "gain": s["FRVSR_GAN"]["PSNR"] - s["Bicubic"]["PSNR"],
        }
    frames = sum(r.frames for r in runs[None])
    out["s_per_frame"] = sum(r.seconds for r in runs[None]) / max(1, frames)
    return out


def reference_quality(lists: dict[str, Path]) -> list[dict]:
    """The teacher (BasicVSR, the authors' Vimeo-90K BIx4 weights) and the shipped default, each as a server runs it
    (``load_for_serving``: the teacher as ``--extra_model teacher`` exports it; a paired default's H.264 rows by the
    model the server picks), on both shared test lists, clean and at CRF 23, with ms/frame at 176x144."""
    from model.teacher import export

    with tempfile.TemporaryDirectory() as tmp:
        entries = [("teacher: BasicVSR BIx4", lambda: export(tmp))]
        if DEFAULT_MODEL.is_file():
            entries.append(("shipped default", lambda: DEFAULT_MODEL))
        rows = []
        for name, checkpoint in entries:
            models, precision, _ = load_for_serving(checkpoint())
            net = models.models[CLEAN]  # both variants: one network, one speed
            row = {"name": name, "precision": precision, "ms_176x144": served_frame_ms(net, precision, 176, 144)}
            for list_name, folder in lists.items():
                row[list_name] = list_quality(models, folder, precision=precision)
                log.info("%s on %s: %s", name, list_name, row[list_name])
            rows.append(row)
    return rows


def served_frame_ms(net: torch.nn.Module, precision: str, width: int, height: int, frames: int = 4) -> float:
    """Per-frame ms of ``super_resolve`` on a random ``frames``-frame clip (after one warm-up frame) of a model
    ``load_for_serving`` prepared, at the precision it chose."""
    rng = np.random.default_rng(0)
    clip = [rng.integers(0, 256, (height, width, 3), dtype=np.uint8) for _ in range(frames + 1)]
    return time_super_resolve(net, clip, precision=precision) / frames * 1000
