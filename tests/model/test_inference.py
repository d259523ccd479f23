"""model/inference.py: the one inference path, its timing helper and the flow computed ahead."""

import pytest
import torch

import model.inference as inference


def test_time_super_resolve_times_the_frames_after_the_warm_up(tiny_model):
    import numpy as np

    from model.inference import time_super_resolve

    frames = [np.zeros((8, 8, 3), np.uint8)] * 3
    assert time_super_resolve(tiny_model, frames, precision="fp32") > 0
    with pytest.raises(ValueError, match="more than 1"):
        time_super_resolve(tiny_model, frames[:1])


def test_bf16_weights_give_what_fp32_weights_under_autocast_gave():
    """The shipped default (a random model amplifies any rounding through its random flow: not a fair probe)."""
    import numpy as np

    from common.paths import DEFAULT_MODEL
    from model.checkpoint import load_checkpoint
    from model.inference import super_resolve, to_tensor
    from testing.clips import moving_clip

    model, _ = load_checkpoint(DEFAULT_MODEL)
    clip = moving_clip(5, 40, 48, dx=1, dy=1, seed=2)
    now = np.stack(list(super_resolve(model, clip, precision="bf16", cut_threshold=None))).astype(float)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        before = [hr for hr, _ in model.iterate(to_tensor(f)[None] for f in clip)]
    before = np.stack([inference.to_uint8(hr) for hr in before]).astype(float)
    psnr = 10 * np.log10(255**2 / np.mean((now - before) ** 2))
    assert psnr > 45, f"bf16 weights vs autocast: {psnr:.1f} dB apart"
    assert all(p.dtype == torch.float32 for p in model.parameters())


def test_flow_ahead_gives_exactly_the_frames_of_the_flow_in_line(tiny_cfg):
    import numpy as np

    from model.inference import super_resolve
    from testing.clips import moving_clip
    from testing.helpers import random_frvsr

    model = random_frvsr(tiny_cfg, seed=5).eval()
    clip = np.concatenate([moving_clip(5, 24, 32, dx=1, dy=0, seed=1), moving_clip(4, 24, 32, dx=0, dy=1, seed=9)])
    in_line = list(super_resolve(model, clip, precision="fp32", cut_threshold=0.05))
    for depth in (1, 3):
        assert all(np.array_equal(a, b) for a, b in zip(
            in_line, super_resolve(model, clip, precision="fp32", cut_threshold=0.05, flow_ahead=depth), strict=True
        ))  # fmt: skip
