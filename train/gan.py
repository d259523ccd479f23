"""FRVSR_GAN's adversarial stage, all of it: ping-pong windows, the spatio-temporal discriminator, its
inputs, the losses, the discriminator's own checkpoint file, and ``GanStage``, which puts them together
(one step, checkpoint selection, saving and resuming). The trainer calls ``GanStage`` and nothing else.

The discriminator sees time (in the spirit of TecoGAN, Chu et al. 2020): it judges windows of three
consecutive high-res frames, with the previous and next frame warped onto the middle one, conditioned
on the upsampled low-res middle frame. Detail that flickers or crawls does not line up after warping,
so the discriminator can tell it from real video; the generator learns detail that is stable in time.
The warping flow comes from the generator's own FNet on the low-res frames, without gradient, and is
the same for real and generated windows, so it carries no hint of which is which. The frames enter as
their detail over the upsampled low-res middle frame, amplified (``DETAIL_GAIN``): that detail, about
1% of the value range, is all that tells real from generated, and on raw frames the spectrally
normalised discriminator had not begun to separate them after a hundred steps (with it: in forty).

Shapes: b = batch, t = frames, (h, w) low-res, (H, W) = (4h, 4w) high-res; images float in [0, 1].
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils.parametrizations import spectral_norm

from common.files import atomic_path
from model.checkpoint import cpu_state_dict
from model.frvsr import FNet, flow_warp, pad_to_multiple, upsample_image, upscale_flow
from model.precision import autocast, resolve_precision
from train.config import TrainConfig
from train.losses import spectrum_loss, warp_loss
from train.metrics import psnr_from_mse
from train.results import MODEL_NAME

log = logging.getLogger(__name__)

WINDOW = 3  # frames per discriminator window: previous, middle, next
D_IN_CHANNELS = 3 * WINDOW + 3  # warped previous, middle, warped next (as detail), upsampled low-res middle
DETAIL_GAIN = 4.0  # detail over the upsampled low-res frame is ~+-0.05: scale it to the range D's layers expect


# ----------------------------------------------------------------------------- ping-pong windows


def pingpong(x: torch.Tensor) -> torch.Tensor:
    """(b, n, ...) frames x_1..x_n -> (b, 2n-1, ...) x_1..x_n..x_1: forward, then back in time."""
    return torch.cat((x, x.flip(1)[:, 1:]), dim=1)


def pingpong_loss(out: torch.Tensor, n: int) -> torch.Tensor:
    """MSE between the forward and backward outputs of each frame x_1..x_{n-1} of a ping-pong sequence.

    ``out`` (b, 2n-1, 3, H, W) is the model's output on ``pingpong(x)``. The forward pass saw
    x_1..x_t before x_t, the backward pass saw x_n..x_t: a model that only accumulates what the
    current frame supports gives the same frame both ways; one that drifts (artifacts carried and
    grown by the recurrence) does not.
    """
    if out.shape[1] != 2 * n - 1:
        raise ValueError(f"pingpong_loss: expected {2 * n - 1} frames for n={n}, got {out.shape[1]}")
    return F.mse_loss(out[:, : n - 1], out[:, n:].flip(1))


# ----------------------------------------------------------------------------- discriminator


class Discriminator(nn.Module):
    """Spatio-temporal patch discriminator with spectral norm on every convolution (stable hinge GAN).

    (N, 12, H, W) windows from ``discriminator_input`` -> logits (N, 1, H/8, W/8) (one per 8x8-pixel
    patch, receptive field ~60 pixels) and the list of intermediate features (for feature matching).
    Any H, W that are multiples of 8. The first convolution already has stride 2 (4x4 kernels still
    see every pixel): a stride-1 layer at full resolution doubled the cost of a GAN step on CPU.
    """

    def __init__(self, channels: int = 32):
        super().__init__()
        self.channels = channels
        c = channels

        def block(cin: int, cout: int) -> nn.Sequential:  # 4x4 stride 2: halves the resolution
            return nn.Sequential(spectral_norm(nn.Conv2d(cin, cout, 4, 2, padding=1)), nn.LeakyReLU(0.2, inplace=True))

        self.blocks = nn.ModuleList([block(D_IN_CHANNELS, c), block(c, 2 * c), block(2 * c, 4 * c)])  # /2, /4, /8
        self.head = spectral_norm(nn.Conv2d(4 * c, 1, 3, padding=1))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        if x.ndim != 4 or x.shape[1] != D_IN_CHANNELS:
            raise ValueError(
                f"Discriminator expects (N, {D_IN_CHANNELS}, H, W) windows from discriminator_input, got "
                f"{tuple(x.shape)}"
            )
        feats = []
        h = x
        for blk in self.blocks:
            h = blk(h)
            feats.append(h)
        return self.head(h), feats


def neighbour_flows(fnet: FNet, lr: torch.Tensor) -> torch.Tensor:
    """Low-res flows that warp each window's previous and next frame onto its middle frame.

    lr (b, t, 3, h, w) -> (b, t-2, 2, 2, h, w): ``[:, i, 0]`` warps frame i onto frame i+1 and
    ``[:, i, 1]`` warps frame i+2 onto frame i+1 (backward flows, as ``flow_warp`` takes them).
    No gradient: the flow only aligns the discriminator's input.
    """
    b, t, c, h, w = lr.shape
    if t < WINDOW:
        raise ValueError(f"need at least {WINDOW} frames for a discriminator window, got {t}")
    mid = lr[:, 1:-1].reshape(-1, c, h, w)  # (b*(t-2), 3, h, w)
    others = torch.cat((lr[:, :-2].reshape(-1, c, h, w), lr[:, 2:].reshape(-1, c, h, w)))  # (2*b*(t-2), 3, h, w)
    with torch.no_grad():
        flow = fnet(pad_to_multiple(torch.cat((mid, mid))), pad_to_multiple(others))[
            ..., :h, :w
        ]  # (2*b*(t-2), 2, h, w)
    prev, nxt = flow.chunk(2)
    return torch.stack((prev, nxt), dim=1).reshape(b, t - 2, 2, 2, h, w)


def pingpong_neighbour_flows(flows: torch.Tensor) -> torch.Tensor:
    """The same windows' flows, read from the generator's own flows on a ping-pong sequence (no new flow pass).

    flows (b, 2n-1, 2, h, w) of ``pingpong(x)``, ``flows[:, j]`` warping frame j-1 onto frame j -> (b, 2n-3, 2, 2,
    h, w) as ``neighbour_flows`` gives. The window around position j needs frame j-1 onto j (``flows[:, j]``) and
    frame j+1 onto j: in x_1..x_n..x_1 that pair occurs again, mirrored, at position 2n-2-j (``flows[:, 2n-2-j]``).
    So a frozen flow is run once per frame for the generator and the discriminator both (it was 3 times).
    """
    m = flows.shape[1]  # 2n-1
    if m < WINDOW or m % 2 == 0:
        raise ValueError(f"expected the flows of a ping-pong sequence (an odd number >= {WINDOW} of frames), got {m}")
    prev = flows[:, 1:-1]
    nxt = flows.flip(1)[:, 1:-1]  # position j -> flows[:, m-1-j] = flows[:, 2n-2-j]
    return torch.stack((prev, nxt), dim=2).detach()


def discriminator_input(hr: torch.Tensor, lr: torch.Tensor, flows: torch.Tensor) -> torch.Tensor:
    """Every window of three consecutive frames, neighbours warped to the middle, plus the condition.

    hr (b, t, 3, H, W) (ground truth or output), lr (b, t, 3, h, w), flows (b, t-2, 2, 2, h, w) from
    ``neighbour_flows`` -> (b*(t-2), 12, H, W): [warped previous, middle, warped next] each as
    ``DETAIL_GAIN * (frame - up)``, then ``2 * up - 1``, where ``up`` is the upsampled low-res middle frame.
    """
    b, t, c, hh, ww = hr.shape
    h, w = lr.shape[-2:]
    n = b * (t - 2)
    mid = hr[:, 1:-1].reshape(n, c, hh, ww)
    prev = flow_warp(hr[:, :-2].reshape(n, c, hh, ww), upscale_flow(flows[:, :, 0].reshape(n, 2, h, w)))
    nxt = flow_warp(hr[:, 2:].reshape(n, c, hh, ww), upscale_flow(flows[:, :, 1].reshape(n, 2, h, w)))
    up = upsample_image(lr[:, 1:-1].reshape(n, c, h, w))
    detail = torch.cat((prev, mid, nxt), dim=1) - up.repeat(1, WINDOW, 1, 1)  # (n, 9, H, W)
    return torch.cat((DETAIL_GAIN * detail, 2 * up - 1), dim=1)


# ----------------------------------------------------------------------------- losses


def d_hinge_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Discriminator hinge loss: push real patches above +1 and generated ones below -1."""
    return F.relu(1 - real_logits).mean() + F.relu(1 + fake_logits).mean()


def g_hinge_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """Generator hinge loss: raise the discriminator's score of generated patches."""
    return -fake_logits.mean()


def feature_matching_loss(fake_feats: list[torch.Tensor], real_feats: list[torch.Tensor]) -> torch.Tensor:
    """Mean over D's layers of the L1 distance between generated and real features (real detached)."""
    return torch.stack([F.l1_loss(f, r.detach()) for f, r in zip(fake_feats, real_feats, strict=True)]).mean()


def vmaf_neg_loss(vmaf, out: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
    """(100 - VMAF NEG) / 100 of the output's frames against the ground truth's, differentiable in the output.

    ``vmaf``: a ``vmaf_torch.VMAF(NEG=True)``; out, hr (b, t, 3, H, W) in [0, 1]. Each frame is scored on its
    BT.601 limited-range luma (16..235, as ``train.metrics.vmaf`` scores served clips), with the ground truth's
    own motion feature (consecutive frames of each window); scores are not clipped, so the gradient never
    vanishes. NEG (no enhancement gain) rather than VMAF: sharpening alone does not raise it.
    """
    b, t = out.shape[:2]
    coef = torch.tensor([65.481, 128.553, 24.966], dtype=torch.float32, device=out.device).view(1, 3, 1, 1)

    def luma(x: torch.Tensor) -> torch.Tensor:  # (b*t, 1, H, W), 16..235
        return 16.0 + (x.reshape(b * t, *x.shape[2:]).float().clamp(0, 1) * coef).sum(1, keepdim=True)

    dist, ref = luma(out), luma(hr).round()
    with torch.no_grad():
        motion = torch.cat([vmaf.compute_motion2(ref[i * t : (i + 1) * t]) for i in range(b)])  # (b*t, 1)
    score = vmaf.predict(vmaf.compute_adm_score(ref, dist), motion, vmaf.compute_vif_features(ref, dist))
    return (100.0 - score).mean() / 100.0


# ----------------------------------------------------------------------------- helpers


def set_requires_grad(module: nn.Module, flag: bool) -> None:
    """Freeze the discriminator while the generator's loss runs through it (no wasted gradients)."""
    for p in module.parameters():
        p.requires_grad_(flag)


def sync_discriminator(disc: nn.Module) -> None:
    """Under torchrun: start every rank from rank 0's discriminator (weights and spectral-norm vectors).

    The discriminator is not wrapped in DistributedDataParallel (it runs twice per step, once frozen),
    so ``average_gradients`` keeps the ranks in step instead.
    """
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        for t in disc.state_dict().values():
            dist.broadcast(t, src=0)


def average_gradients(disc: nn.Module) -> None:
    """Under torchrun: average the discriminator's gradients over ranks (what DDP does for the generator)."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        world = dist.get_world_size()
        for p in disc.parameters():
            if p.grad is not None:
                dist.all_reduce(p.grad)
                p.grad /= world


# ----------------------------------------------------------------------------- checkpoint


def discriminator_path(generator_path: str | Path) -> Path:
    """``.../FRVSR_GAN_x.pth`` -> ``.../discriminator_x.pth``: saved beside the generator, for resuming."""
    p = Path(generator_path)
    prefix = f"{MODEL_NAME}_"
    return p.with_name(f"discriminator_{p.name[len(prefix) :] if p.name.startswith(prefix) else p.name}")


def save_discriminator(path: str | Path, disc: Discriminator, **extra) -> None:
    """Atomically write ``{'d_args': {...}, 'model': state_dict, **extra}`` (never into the generator's .pth)."""
    state = cpu_state_dict(disc)
    with atomic_path(path) as tmp:
        torch.save({"d_args": {"channels": disc.channels}, "model": state, **extra}, tmp)


def load_discriminator(path: str | Path) -> Discriminator:
    """Rebuild the discriminator stored by ``save_discriminator``."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        disc = Discriminator(**ckpt["d_args"])
        disc.load_state_dict(ckpt["model"])
    except Exception as e:
        raise ValueError(f"cannot load discriminator checkpoint {path}: {e}") from e
    return disc


# ----------------------------------------------------------------------------- the stage


@dataclass
class GanStage:
    """What the adversarial stage adds to a training run: the discriminator and its optimiser, the step
    that trains both networks, and which validated checkpoint to keep.

    The generator's ``.pth`` stays a plain FRVSR checkpoint; the discriminator is saved beside it
    (``discriminator_path``) so a later fine-tune can resume it.
    """

    cfg: TrainConfig
    disc: Discriminator
    opt_d: torch.optim.Optimizer
    ref_psnr: float = -math.inf  # validation PSNR of the starting model (init_from)
    kept_within: bool = False  # the kept checkpoint is within gan_psnr_drop of ref_psnr
    vmaf: nn.Module | None = None  # vmaf_torch's VMAF NEG, for the w_vmaf term

    @classmethod
    def build(cls, cfg: TrainConfig, device: torch.device | str) -> GanStage:
        """A fresh discriminator, or the one saved beside ``init_from`` (its architecture wins)."""
        resume = discriminator_path(cfg.init_from) if cfg.init_from else None
        if resume is not None and resume.is_file():
            disc = load_discriminator(resume)
            log.info("discriminator resumed from %s", resume)
        else:
            disc = Discriminator(cfg.d_channels)
        disc = disc.to(device).train()
        sync_discriminator(disc)
        vmaf = None
        if cfg.w_vmaf > 0:
            from vmaf_torch import VMAF  # imports slowly; only a run with the term needs it

            vmaf = VMAF(temporal_pooling=False, enable_motion=True, clip_score=False, NEG=True).to(device).eval()
        # beta1 0.5: the usual GAN setting, momentum lags behind a moving target less
        opt_d = torch.optim.Adam(disc.parameters(), lr=cfg.gan_lr_d, betas=(0.5, 0.999))
        return cls(cfg, disc, opt_d, vmaf=vmaf)

    def step(self, net: nn.Module, opt_g: torch.optim.Optimizer, lr: torch.Tensor, hr: torch.Tensor) -> dict:
        """One adversarial step on a ping-pong window: the discriminator first, then the generator.

        lr (b, n, 3, h, w), hr (b, n, 3, 4h, 4w). Generator loss = pixel L2 + flow_loss_weight * warp
        + w_pingpong * ping-pong + w_adv * hinge + w_fm * feature matching, all on x_1..x_n..x_1, + w_vmaf *
        ``vmaf_neg_loss`` and w_spectrum * ``train.losses.spectrum_loss`` on x_1..x_n.
        """
        cfg, disc = self.cfg, self.disc
        n = lr.shape[1]
        lr_pp, hr_pp = pingpong(lr), pingpong(hr)  # (b, 2n-1, ...)
        # the forward passes under the run's precision (bf16 autocast where the CPU runs it natively); the
        # losses are reduced in float32, the warp's flows are float32 already
        with autocast(resolve_precision(cfg.precision, lr.device), lr.device):
            out, flows = net(lr_pp)  # (b, 2n-1, 3, H, W), (b, 2n-1, 2, h, w)
            nflows = pingpong_neighbour_flows(flows)  # (b, 2n-3, 2, 2, h, w), no gradient
            real = discriminator_input(hr_pp, lr_pp, nflows)  # (b*(2n-3), 12, H, W)
            fake = discriminator_input(out, lr_pp, nflows)

            # discriminator: real and generated windows in one batch (generated ones detached)
            set_requires_grad(disc, True)
            self.opt_d.zero_grad(set_to_none=True)
            logits, _ = disc(torch.cat((real, fake.detach())))
            d_real, d_fake = logits.float().chunk(2)
            loss_d = d_hinge_loss(d_real, d_fake)
        loss_d.backward()
        average_gradients(disc)
        self.opt_d.step()

        # generator, through the frozen (just updated) discriminator
        set_requires_grad(disc, False)
        with autocast(resolve_precision(cfg.precision, lr.device), lr.device):
            logits, feats = disc(torch.cat((real, fake)))
        fake_logits = logits.float().chunk(2)[1]
        fm = feature_matching_loss([f.float().chunk(2)[1] for f in feats], [f.float().chunk(2)[0] for f in feats])
        adv = g_hinge_loss(fake_logits)
        out = out.float()
        pixel = F.mse_loss(out, hr_pp)
        warp = warp_loss(lr_pp, flows)
        pp = pingpong_loss(out, n)
        loss = pixel + cfg.flow_loss_weight * warp + cfg.w_pingpong * pp + cfg.w_adv * adv + cfg.w_fm * fm
        if self.vmaf is not None:  # the forward pass's frames (the backward pass repeats them)
            vmaf = vmaf_neg_loss(self.vmaf, out[:, :n], hr)
            loss = loss + cfg.w_vmaf * vmaf
        if cfg.w_spectrum:
            spectrum = spectrum_loss(out[:, :n], hr)
            loss = loss + cfg.w_spectrum * spectrum
        opt_g.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(net.parameters(), cfg.grad_clip)
        opt_g.step()
        set_requires_grad(disc, True)
        return {
            "loss": loss.item(),
            "pixel": pixel.item(),
            "flow": warp.item(),
            "psnr": psnr_from_mse(pixel.item()),
            "pingpong": pp.item(),
            "adv": adv.item(),
            "fm": fm.item(),
            **({"vmaf_neg": 100.0 * (1.0 - vmaf.item())} if self.vmaf is not None else {}),
            **({"spectrum": spectrum.item()} if cfg.w_spectrum else {}),
            "d_loss": loss_d.item(),
            "d_real": d_real.mean().item(),
            "d_fake": d_fake.mean().item(),
        }

    def set_reference(self, scores: dict) -> None:
        """The starting model's validation scores: ``keep`` measures the PSNR drop from them."""
        self.ref_psnr = scores["PSNR"]
        log.info(
            "GAN stage starts from val PSNR %.4f dB SSIM %.4f tOF %.4f VMAF %.2f VMAF NEG %.2f; keeping checkpoints "
            "above %.4f dB",
            scores["PSNR"],
            scores["SSIM"],
            scores["tOF"],
            scores.get("VMAF", math.nan),
            scores.get("VMAF_NEG", math.nan),
            self.ref_psnr - self.cfg.gan_psnr_drop,
        )

    def keep(self, scores: dict, kept: dict | None) -> bool:
        """Whether this validation's weights replace the kept checkpoint (``kept``: the kept one's scores, or None).

        PSNR falls as the generator trades fidelity for detail, so the best PSNR would just be the
        starting model; instead, among the checkpoints whose PSNR is within ``gan_psnr_drop`` dB of the
        starting model's (a guard against a diverging GAN), the latest is kept (``gan_keep: latest``) or the
        one with the best ``gan_keep`` score (VMAF or VMAF NEG); until one qualifies, the best PSNR.
        """
        within = scores["PSNR"] >= self.ref_psnr - self.cfg.gan_psnr_drop
        if kept is None:
            keep = True
        elif within and self.kept_within and self.cfg.gan_keep != "latest":
            best = kept.get(self.cfg.gan_keep, math.nan)
            keep = math.isnan(best) or scores[self.cfg.gan_keep] > best  # a kept one without the score: replaced
        elif within:
            keep = True
        else:
            keep = not self.kept_within and (scores["PSNR"] > kept["PSNR"] or math.isnan(kept["PSNR"]))
        if keep:
            self.kept_within = self.kept_within or within
        return keep

    def save(self, generator_path: Path, **extra) -> None:
        """The discriminator beside the kept generator checkpoint."""
        save_discriminator(discriminator_path(generator_path), self.disc, **extra)

    def state_dict(self) -> dict:
        """For ``resume``: the discriminator, its optimiser and the selection state."""
        disc = cpu_state_dict(self.disc)
        return {
            "disc": disc,
            "opt_d": self.opt_d.state_dict(),
            "ref_psnr": self.ref_psnr,
            "kept_within": self.kept_within,
        }

    def load_state_dict(self, state: dict) -> None:
        self.disc.load_state_dict(state["disc"])
        self.opt_d.load_state_dict(state["opt_d"])
        self.ref_psnr, self.kept_within = state["ref_psnr"], state["kept_within"]
