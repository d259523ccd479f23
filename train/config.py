"""Training settings: one dataclass, overridden by the platform's ``advance_settings``."""

from __future__ import annotations

import ast
import json
from dataclasses import asdict, dataclass, field

from model.checkpoint import ARCHS, DEFAULT_ARCH
from model.frvsr import FRVSRConfig
from model.precision import check_precision
from train.data import DEGRADATIONS

# the GAN stage's checkpoint rules (``gan_keep``): the latest within gan_psnr_drop, or the best of a validation score
GAN_KEEP = ("latest", "VMAF", "VMAF_NEG")
# model.teacher.WEIGHTS trained on bicubic x4 input (BDx4 saw blurred input: not what distillation feeds it)
DISTILL_TEACHERS = ("BIx4", "REDS4")


@dataclass
class TrainConfig:
    """Every key of ``advance_settings``; defaults suit a CPU box and a small dataset."""

    # budget
    max_minutes: float = 60.0  # wall-clock training budget; 0 = no limit (epochs decide)
    epochs: int = 1000  # upper bound on epochs; whichever of this and max_minutes comes first
    # CPU-time budget of this run's own training processes (user + system, DataLoader workers and the flow
    # cache included; not what init_from inherited): equal-budget studies on a shared box; 0 = no limit. The
    # cosine follows whichever budget is nearest its end
    max_cpu_minutes: float = 0.0
    # optimisation
    batch_size: int = 4
    lr: float = 2e-4  # Adam
    lr_min: float = 1e-5  # cosine decay floor (over the epoch budget or the time budget)
    # a linear ramp of the learning rate over the run's first N steps: a fresh Adam's first steps move every weight
    # by about lr whatever its gradient, which knocks a converged init_from model off its optimum; 0 = none
    warmup_steps: int = 0
    # weight of FNet's warping loss on low-res frames (the "warp" loss, also in the GAN stage)
    flow_loss_weight: float = 0.5
    grad_clip: float = 1.0
    # data
    # more dataset folders, each split by its own sep_*list.txt (or val_split)
    extra_datasets: list = field(default_factory=list)
    crop_size: int = 128  # high-res crop side; multiple of 32 (low-res side multiple of 8)
    num_frames: int = 10  # frames per training window (recurrence length); shorter clips fill it ping-pong
    crops_per_clip: int = 16  # random windows per clip per epoch
    val_split: float = 0.2  # fraction held out when the dataset has no sep_testlist.txt
    # 'bicubic' (BI), 'blur' (BD, Gaussian sigma 1.5) or 'realistic' (train/degradations.py)
    degradation: str = "realistic"
    min_frames: int = 7  # folders with fewer images are skipped
    val_every: int = 1  # validate every N epochs (and at the end)
    # DataLoader worker processes (the degradation, H.264 included, runs there); 0 = in the training process
    workers: int = 1
    resume: str = ""  # continue the run in this runs/models/<uuid> folder (its settings win; see train/trainer.py)
    # the architecture (model.checkpoint.ARCHS): 'frvsr' (FNet flow) or 'frvsr-spynet' (BasicVSR's pretrained
    # SPyNet as the flow: model/frvsr_spynet.py); a fresh frvsr-spynet starts from the released SPyNet
    arch: str = DEFAULT_ARCH
    # the flow network's learning rate as a fraction of lr; 0 = frozen (no gradient through it: faster steps)
    flow_lr_scale: float = 1.0
    # a frozen flow's flows computed once per training clip on its whole low-res frames (train/flows.py) instead
    # of at every step on the crop: needs flow_lr_scale 0; the pixel stage only
    flow_cache: bool = False
    # distillation (train/teacher_targets.py): the weight of an L2 between the output and the teacher's (BasicVSR's
    # released ``distill_teacher`` weights) output of the same clean low-res clip, beside the L2 to the ground
    # truth; its targets are computed once per training clip; the ``bicubic`` degradation and the pixel stage only
    distill: float = 0.0
    distill_teacher: str = "BIx4"  # one of DISTILL_TEACHERS
    # model: the architecture's config fields (FRVSR: channels, blocks, fnet_channels, upsampler, residual,
    # max_flow, hidden; frvsr-spynet adds flow_scale) are set by their own names in advance_settings; their
    # defaults are the config class's
    model: FRVSRConfig = field(default_factory=FRVSRConfig)
    # misc
    seed: int = 0
    threads: int = 0  # torch threads per process; 0 = cores / processes
    # FRVSR and GAN steps and validation: auto = bf16 autocast where the CPU/GPU runs it natively (2x faster
    # steps measured on an AMX CPU; a GAN step 1.9x on an AVX512-BF16 one), else fp32
    precision: str = "auto"
    init_from: str = ""  # start from this FRVSR checkpoint's weights (its architecture wins)
    # adversarial stage (FRVSR_GAN, train/gan.py): fine-tune a trained FRVSR (init_from) against a
    # spatio-temporal discriminator. `lr` is then the generator's learning rate: ~5e-5 suits a fine-tune.
    gan: bool = False  # turn the adversarial stage on
    # discriminator Adam learning rate, constant; faster than G (SAGAN-style) so its judgement keeps up
    gan_lr_d: float = 4e-4
    # hinge adversarial loss (SRGAN's weight against pixel MSE); 3e-3 adds detail faster, and artifacts
    w_adv: float = 1e-3
    w_fm: float = 0.02  # L1 between D's features of output and ground truth: steadier detail than w_adv alone
    # (100 - VMAF NEG) / 100 of the output frames (train.gan.vmaf_neg_loss, vmaf-torch's differentiable port):
    # a perceptual term that sharpening alone cannot game; ~1 s a step on one core at batch 4, 6 frames, 128 px
    w_vmaf: float = 0.0
    # L1 between the log amplitude spectra of output and ground truth (train.losses.spectrum_loss): texture energy
    w_spectrum: float = 0.0
    w_pingpong: float = 0.5  # MSE between the forward and backward pass of a ping-pong window: against drift (TecoGAN)
    # discriminator base width (32-64-128): its cost grows ~quadratically, and it dominates a GAN step on CPU
    d_channels: int = 32
    gan_psnr_drop: float = 1.0  # keep the latest validated checkpoint within this many dB of init_from's PSNR
    # which checkpoint within gan_psnr_drop the GAN stage keeps: the latest, or the best validation VMAF / VMAF NEG
    gan_keep: str = "latest"

    def __post_init__(self) -> None:
        if self.degradation not in DEGRADATIONS:
            raise ValueError(f"degradation must be one of {list(DEGRADATIONS)}, got {self.degradation!r}")
        if self.crop_size <= 0 or self.crop_size % 32:
            raise ValueError(f"crop_size must be a positive multiple of 32, got {self.crop_size}")
        if self.num_frames < 2:
            raise ValueError(f"num_frames must be >= 2 (the model is recurrent), got {self.num_frames}")
        if self.batch_size < 1 or self.epochs < 1 or self.crops_per_clip < 1:
            raise ValueError("batch_size, epochs and crops_per_clip must be >= 1")
        if not 0 < self.val_split < 1:
            raise ValueError(f"val_split must be in (0, 1), got {self.val_split}")
        if self.max_minutes < 0 or self.max_cpu_minutes < 0 or self.lr <= 0:
            raise ValueError("max_minutes and max_cpu_minutes must be >= 0 and lr > 0")
        if self.gan_lr_d <= 0 or self.d_channels < 1 or self.gan_psnr_drop < 0:
            raise ValueError("gan_lr_d must be > 0, d_channels >= 1 and gan_psnr_drop >= 0")
        if self.gan_keep not in GAN_KEEP:
            raise ValueError(f"gan_keep must be one of {list(GAN_KEEP)}, got {self.gan_keep!r}")
        if min(self.w_adv, self.w_fm, self.w_pingpong, self.w_vmaf, self.w_spectrum, self.flow_loss_weight) < 0:
            raise ValueError("w_adv, w_fm, w_pingpong, w_vmaf, w_spectrum and flow_loss_weight must be >= 0")
        if self.arch not in ARCHS or not issubclass(ARCHS[self.arch][0], FRVSRConfig):
            trainable = sorted(a for a, (c, _) in ARCHS.items() if issubclass(c, FRVSRConfig))
            raise ValueError(f"arch must be one of {trainable} (the FRVSR recurrence), got {self.arch!r}")
        if type(self.model) is not ARCHS[self.arch][0]:
            raise ValueError(f"arch {self.arch!r} takes a {ARCHS[self.arch][0].__name__}, got {self.model!r}")
        if self.flow_lr_scale < 0:
            raise ValueError(f"flow_lr_scale must be >= 0, got {self.flow_lr_scale}")
        if self.flow_cache and (self.flow_lr_scale != 0 or self.gan):
            raise ValueError(
                "flow_cache needs a frozen flow (flow_lr_scale 0) and the pixel stage (gan off): "
                f"got flow_lr_scale {self.flow_lr_scale}, gan {self.gan}"
            )
        if self.distill < 0 or (self.distill and (self.degradation != "bicubic" or self.gan)):
            raise ValueError(
                "distill must be >= 0, and its targets are the teacher's output of clean input: it needs the "
                f"'bicubic' degradation and the pixel stage (gan off); got distill {self.distill}, degradation "
                f"{self.degradation!r}, gan {self.gan}"
            )
        if self.distill_teacher not in DISTILL_TEACHERS:
            raise ValueError(
                f"distill_teacher must be one of {list(DISTILL_TEACHERS)} (the teacher weights trained on bicubic "
                f"input, which is what distillation feeds them), got {self.distill_teacher!r}"
            )
        if self.workers < 0:
            raise ValueError(f"workers must be >= 0, got {self.workers}")
        if not all(isinstance(p, str) and p for p in self.extra_datasets):
            raise ValueError(f"extra_datasets must be a list of folder paths, got {self.extra_datasets!r}")
        check_precision(self.precision)

    @classmethod
    def from_settings(cls, settings: dict) -> TrainConfig:
        """Apply ``advance_settings``; unknown keys and wrong types are errors listing what is valid.

        Architecture keys (the fields of ``arch``'s config class) go to ``model``; everything else to this class."""
        train_defaults = {k: v for k, v in asdict(cls()).items() if k != "model"}
        arch = settings.get("arch", DEFAULT_ARCH)
        if arch not in ARCHS:
            raise ValueError(f"advance_settings['arch'] must be one of {sorted(ARCHS)}, got {arch!r}")
        model_cls = ARCHS[arch][0]
        arch_defaults = asdict(model_cls())
        unknown = sorted(set(settings) - set(train_defaults) - set(arch_defaults))
        if unknown:
            raise ValueError(
                f"unknown advance_settings key(s) {unknown}; valid keys: {sorted([*train_defaults, *arch_defaults])}"
            )
        kwargs, model_args = {}, {}
        for k, v in settings.items():
            default = train_defaults[k] if k in train_defaults else arch_defaults[k]
            want = type(default)
            if want is float and isinstance(v, int) and not isinstance(v, bool):
                v = float(v)
            if want is list and isinstance(v, tuple):
                v = list(v)
            if not isinstance(v, want) or (want is int and isinstance(v, bool)):
                raise ValueError(f"advance_settings[{k!r}] must be {want.__name__}, got {v!r}")
            (kwargs if k in train_defaults else model_args)[k] = v
        return cls(**kwargs, model=model_cls(**model_args))

    def settings(self) -> dict:
        """The flat ``advance_settings`` form of this config (what ``from_settings`` takes back)."""
        flat = asdict(self)
        return {**{k: v for k, v in flat.items() if k != "model"}, **flat["model"]}


def parse_annotation_data(text: str) -> dict:
    """The platform's ``--annotation_data``: a Python-literal or JSON dict (parsed safely, never eval)."""
    text = (text or "").strip() or "{}"
    try:
        data = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(
                f"--annotation_data is neither a Python literal nor JSON: {e}. Example: "
                f"\"{{'advance_settings': {{'max_minutes': 3}}}}\""
            ) from None
    if not isinstance(data, dict):
        raise ValueError(f"--annotation_data must be a dict, got {type(data).__name__}")
    settings = data.get("advance_settings", {}) or {}
    if not isinstance(settings, dict):
        raise ValueError(f"advance_settings must be a dict, got {type(settings).__name__}")
    return settings
