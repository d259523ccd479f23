"""Clip datasets: sample discovery (seed and Vimeo-90K layouts), image reading, degradation, crops.

A *sample* is one folder of consecutive frames. High-res frames are read from disk; the low-res input
is made on the fly by ``degrade`` so training and evaluation see exactly the same degradation.
"""

from __future__ import annotations

import logging
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from model.frvsr import SCALE, upsample_image
from model.inference import to_tensor
from train.degradations import DEGRADATIONS, degrade  # noqa: F401  (re-exported: the data API)
from train.flows import ClipFlows, flip_flows, window_flows

log = logging.getLogger(__name__)

IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".bmp"}


class DataError(ValueError):
    """Bad dataset: the message names the path and says what to do."""


# ----------------------------------------------------------------------------- discovery


def natural_key(name: str) -> list:
    """Sort key so that 'frame_2' comes before 'frame_10'."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


@dataclass(frozen=True)
class Sample:
    name: str  # path relative to the dataset root, '/'-separated (e.g. '00001/0001' or 'sample_x')
    frames: tuple[Path, ...]


def _frames_in(folder: Path) -> list[Path]:
    files = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTS]
    return sorted(files, key=lambda p: natural_key(p.name))


def discover_samples(root: str | Path, min_frames: int = 7) -> list[Sample]:
    """Every folder under ``root`` (recursively) holding at least ``min_frames`` images is a sample.

    Folders with some images but fewer than ``min_frames`` are skipped with one warning listing them.
    Raises DataError if ``root`` is missing or holds no usable sample.
    """
    root = Path(root)
    if not root.exists():
        raise DataError(f"dataset path does not exist: {root}. Pass --dataset_path pointing at a folder of clips.")
    if not root.is_dir():
        raise DataError(f"dataset path is not a folder: {root}")
    samples, short = [], []
    for folder in sorted([root, *[p for p in root.rglob("*") if p.is_dir()]], key=lambda p: natural_key(str(p))):
        frames = _frames_in(folder)
        if not frames:
            continue
        rel = folder.relative_to(root).as_posix()
        if len(frames) >= min_frames:
            samples.append(Sample(_short_name(rel), tuple(frames)))
        else:
            short.append(f"{rel or '.'} ({len(frames)})")
    if short:
        log.warning("skipped %d folder(s) with fewer than %d frames: %s", len(short), min_frames, ", ".join(short))
    if not samples:
        raise DataError(
            f"no usable sample under {root}: need folders with at least {min_frames} frames "
            f"({', '.join(sorted(IMAGE_EXTS))}), e.g. dataset/sample_x/frame_1.png ... or "
            f"sequences/00001/0001/im1.png ... im7.png"
        )
    return samples


def _short_name(rel: str) -> str:
    # Vimeo lists name clips without the 'sequences/' prefix
    return rel[len("sequences/") :] if rel.startswith("sequences/") else rel


def read_list(root: Path, name: str) -> list[str] | None:
    """Clip names from a Vimeo split file (e.g. sep_testlist.txt) at the dataset root, if present."""
    path = Path(root) / name
    if not path.is_file():
        return None
    return [line.strip().strip("/") for line in path.read_text().splitlines() if line.strip()]


def split_samples(
    root: str | Path, samples: list[Sample], val_split: float, seed: int
) -> tuple[list[Sample], list[Sample]]:
    """(train, val): Vimeo's sep_testlist.txt / sep_trainlist.txt when present, else a seeded fraction."""
    by_name = {s.name: s for s in samples}
    test_list = read_list(Path(root), "sep_testlist.txt")
    if test_list is not None:
        val = [by_name[n] for n in test_list if n in by_name]
        train_list = read_list(Path(root), "sep_trainlist.txt")
        names = set(train_list) if train_list is not None else set(by_name) - set(test_list)
        train = [s for s in samples if s.name in names and s.name not in set(test_list)]
        if val and train:
            return train, val
        log.warning("sep_testlist.txt/sep_trainlist.txt do not match the clips found; using a random split")
    if len(samples) < 2:
        log.warning("only one sample: validating on the training sample")
        return list(samples), list(samples)
    rng = random.Random(seed)
    shuffled = samples[:]
    rng.shuffle(shuffled)
    n_val = min(len(samples) - 1, max(1, round(len(samples) * val_split)))
    return shuffled[n_val:], shuffled[:n_val]


# ----------------------------------------------------------------------------- images


def read_image(path: str | Path) -> np.ndarray:
    """Read any PNG/JPG/BMP as uint8 (h, w, 3) RGB: grayscale, RGBA and 16-bit are converted."""
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise DataError(
            f"cannot read image {path}: the file is missing, empty or not a valid image; replace or delete it"
        )
    if img.dtype == np.uint16:
        img = (img.astype(np.float32) / 257.0).round().astype(np.uint8)
    elif img.dtype != np.uint8:
        img = np.clip(img, 0, 255).astype(np.uint8)
    if img.ndim == 2:
        img = cv2.cvtColor(img, cv2.COLOR_GRAY2RGB)
    elif img.shape[2] == 4:
        img = cv2.cvtColor(img, cv2.COLOR_BGRA2RGB)
    else:
        img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    return img


def read_clip(sample: Sample) -> np.ndarray:
    """All frames of a sample as uint8 (t, h, w, 3); frames of different sizes are an error."""
    frames = [read_image(p) for p in sample.frames]
    sizes = {f.shape for f in frames}
    if len(sizes) > 1:
        raise DataError(
            f"sample {sample.name}: frames have different sizes {sorted(s[:2] for s in sizes)}; all frames of a clip "
            "must match"
        )
    return np.stack(frames)


def crop_to_scale(clip: np.ndarray) -> np.ndarray:
    """Crop (t, h, w, 3) bottom/right so h, w are multiples of 4: ground truth must be exactly 4x the input."""
    h, w = clip.shape[1:3]
    return clip[:, : h - h % SCALE, : w - w % SCALE]


# ----------------------------------------------------------------------------- baseline


def bicubic_upscale(lr: torch.Tensor) -> torch.Tensor:
    """The baseline: (n, 3, h, w) -> (n, 3, 4h, 4w) bicubic, clamped to [0, 1]."""
    return upsample_image(lr).clamp(0, 1)


# ----------------------------------------------------------------------------- training set


class TrainClips(Dataset):
    """Random (num_frames, crop, crop) windows of the training clips with flips and temporal reversal.

    Returns (lr (t, 3, c/4, c/4), hr (t, 3, c, c)) float in [0, 1]; with ``flows`` (one ``train.flows.ClipFlows``
    per sample, a frozen flow network's) also the window's flows (t, 2, c/4, c/4), cut from them and flipped
    with the frames (crops then start on multiples of 4: the low-res grid); with ``targets`` (the teacher's
    uint8 output of each clip, ``train.teacher_targets``) last the window's targets (t, 3, c, c), cut alike.
    Clips are decoded once and cached as uint8. A clip shorter than ``num_frames`` is played forward then
    backward (ping-pong) to fill the window, so 7-frame Vimeo clips train beside 10-40-frame real clips
    with longer windows.
    """

    def __init__(
        self,
        samples: Sequence[Sample],
        num_frames: int,
        crop_size: int,
        degradation: str,
        crops_per_clip: int,
        clips: Sequence[np.ndarray] | None = None,
        flows: Sequence[ClipFlows] | None = None,
        targets: Sequence[np.ndarray] | None = None,
    ):
        if crop_size % (SCALE * 8):
            raise ValueError(f"crop_size must be a multiple of {SCALE * 8}, got {crop_size}")
        self.clips = list(clips) if clips is not None else read_train_clips(samples, crop_size)
        if flows is not None and len(flows) != len(self.clips):
            raise ValueError(f"{len(flows)} clips' flows for {len(self.clips)} clips")
        self.flows = flows
        if targets is not None and [t.shape for t in targets] != [c.shape for c in self.clips]:
            raise ValueError("the teacher's targets must match the clips one for one, frame for frame")
        self.targets = targets
        self.num_frames, self.crop, self.degradation = num_frames, crop_size, degradation
        self.crops_per_clip = crops_per_clip  # randomness: the process's (and each DataLoader worker's) RNG

    def __len__(self) -> int:
        return len(self.clips) * self.crops_per_clip

    def __getitem__(self, idx: int) -> tuple[torch.Tensor, ...]:
        i = idx % len(self.clips)
        clip = self.clips[i]
        t, h, w = clip.shape[:3]
        # a long clip: any window inside it; a short one: a window anywhere on its ping-pong loop
        start = random.randint(0, t - self.num_frames) if t >= self.num_frames else random.randrange(2 * (t - 1))
        times = pingpong_indices(t, self.num_frames, start)
        # flows and the teacher's targets were made on the whole frame's low-res grid: crops start on it
        step = SCALE if self.flows is not None or self.targets is not None else 1
        y, x = step * random.randint(0, (h - self.crop) // step), step * random.randint(0, (w - self.crop) // step)
        hflip, vflip, transpose, backwards = (random.random() < 0.5 for _ in range(4))
        if backwards:
            times = times[::-1]

        def window(frames: np.ndarray) -> torch.Tensor:
            win = frames[times, y : y + self.crop, x : x + self.crop]
            if hflip:
                win = win[:, :, ::-1]
            if vflip:
                win = win[:, ::-1]
            if transpose:
                win = win.transpose(0, 2, 1, 3)  # swap axes: motion in a new direction
            return to_tensor(win.copy())

        hr = window(clip)
        out = [degrade(hr, self.degradation), hr]
        if self.flows is not None:
            c = self.crop // SCALE
            flow = window_flows(self.flows[i], times)[..., y // SCALE : y // SCALE + c, x // SCALE : x // SCALE + c]
            out.append(flip_flows(flow, hflip, vflip, transpose))
        if self.targets is not None:
            out.append(window(self.targets[i]))  # the teacher's frames of the same window, flipped alike
        return tuple(out)


def read_train_clips(samples: Sequence[Sample], crop_size: int) -> list[np.ndarray]:
    """Every sample's frames as uint8 (t, H, W, 3), cropped to multiples of 4; a clip smaller than two frames of
    ``crop_size`` is an error that says what to change."""
    clips = []
    for s in samples:
        clip = crop_to_scale(read_clip(s))
        t, h, w = clip.shape[:3]
        if t < 2 or h < crop_size or w < crop_size:
            raise DataError(
                f"sample {s.name} ({t} frames of {w}x{h}) is smaller than 2 frames of crop_size={crop_size}; "
                "lower crop_size"
            )
        clips.append(clip)
    return clips


def pingpong_indices(frames: int, length: int, start: int = 0) -> list[int]:
    """``length`` frame indices from ``start``, bouncing off both ends of a ``frames``-frame clip
    (0, 1, ..., n-1, n-2, ..., 0, 1, ...): consecutive indices always differ by exactly one."""
    if frames < 2:
        raise ValueError("a ping-pong window needs a clip of at least 2 frames")
    period = 2 * (frames - 1)
    phases = [(start + i) % period for i in range(length)]
    return [p if p < frames else period - p for p in phases]
