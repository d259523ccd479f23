"""train/losses.py's spectrum loss: what detail there is at each frequency, not where it is."""

import torch
import torch.nn.functional as F

from train.losses import spectrum_loss


def test_the_spectrum_loss_sees_missing_detail_and_not_its_position():
    torch.manual_seed(0)
    hr = torch.rand(2, 3, 3, 32, 32)
    assert spectrum_loss(hr, hr).item() == 0.0
    shifted = hr.roll(shifts=(5, 7), dims=(-2, -1))  # the same texture elsewhere (a circular shift: phase only)
    assert spectrum_loss(shifted, hr).item() < 1e-5
    assert F.mse_loss(shifted, hr).item() > 0.1  # where the pixel loss sees a different picture
    blurred = F.avg_pool2d(hr.flatten(0, 1), 3, stride=1, padding=1).view_as(hr)  # detail taken away
    assert spectrum_loss(blurred, hr).item() > 0.02
    out = blurred.clone().requires_grad_(True)
    spectrum_loss(out, hr).backward()
    assert out.grad is not None and out.grad.abs().sum() > 0
