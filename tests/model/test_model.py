"""FRVSR model: warping convention, shapes at odd sizes, recurrence, checkpoint round trip."""

import numpy as np
import pytest
import torch

from model.checkpoint import load_checkpoint, save_checkpoint
from model.frvsr import (
    FRVSR,
    FRVSRConfig,
    RepConv,
    depth_to_space,
    flow_warp,
    pad_to_multiple,
    space_to_depth,
    upsample_image,
    upsample_image_phases,
    upscale_flow,
)
from model.inference import super_resolve, to_tensor
from testing.helpers import random_frvsr


def test_flow_warp_zero_flow_is_identity():
    x = torch.rand(2, 3, 9, 13)
    assert torch.allclose(flow_warp(x, torch.zeros(2, 2, 9, 13)), x, atol=1e-6)


def test_flow_warp_integer_flow_is_a_shift():
    x = torch.rand(1, 3, 10, 12)
    flow = torch.zeros(1, 2, 10, 12)
    flow[:, 0] = 2  # x + 2: out[j] = x[j + 2]
    flow[:, 1] = -1  # y - 1: out[i] = x[i - 1]
    out = flow_warp(x, flow)
    assert torch.allclose(out[:, :, 1:, :-2], x[:, :, :-1, 2:], atol=1e-5)
    # outside the image the border is repeated
    assert torch.allclose(out[:, :, 0, :-2], x[:, :, 0, 2:], atol=1e-5)


def test_flow_warp_samples_in_float32_whatever_the_image_dtype():
    """The hidden state arrives in bf16 under autocast: its warp must still land on the right pixels
    (a bf16 sampling grid is off by up to ~1 px across a wide frame)."""
    x = torch.rand(1, 4, 8, 480).bfloat16()
    zero = flow_warp(x, torch.zeros(1, 2, 8, 480))
    assert zero.dtype == torch.bfloat16
    assert (zero.float() - x.float()).abs().max() < 0.01  # one bf16 step; a bf16 grid misses by ~0.5
    shift = torch.zeros(1, 2, 8, 480)
    shift[:, 0] = 1.0  # out[j] = x[j + 1]
    assert (flow_warp(x, shift)[..., :-1].float() - x[..., 1:].float()).abs().max() < 0.01


def test_flow_warp_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="do not match"):
        flow_warp(torch.rand(1, 3, 8, 8), torch.zeros(1, 2, 4, 4))


def test_space_to_depth_inverts_pixel_shuffle():
    x = torch.rand(1, 3, 16, 24)
    s = space_to_depth(x)
    assert s.shape == (1, 48, 4, 6)
    assert torch.equal(torch.nn.functional.pixel_shuffle(s, 4), x)


def test_flow_warp_with_low_res_flow_equals_upscaling_first():
    x = torch.rand(2, 3, 32, 40)
    flow = torch.randn(2, 2, 8, 10) * 3  # low-res pixels
    torch.testing.assert_close(flow_warp(x, flow, upscale=4), flow_warp(x, upscale_flow(flow)), atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="do not match"):
        flow_warp(x, flow, upscale=2)


def test_depth_to_space_is_pixel_shuffle_in_any_layout():
    y = torch.rand(2, 48, 5, 7)
    assert torch.equal(depth_to_space(y), torch.nn.functional.pixel_shuffle(y, 4))
    assert torch.equal(depth_to_space(y.to(memory_format=torch.channels_last)), torch.nn.functional.pixel_shuffle(y, 4))
    assert torch.equal(space_to_depth(depth_to_space(y)), y)


@pytest.mark.parametrize("h, w", [(8, 8), (5, 9), (37, 53), (2, 3)])
def test_bicubic_residual_at_low_res_equals_bicubic_upsampling(h, w):
    x = torch.rand(2, 3, h, w)
    torch.testing.assert_close(depth_to_space(upsample_image_phases(x)), upsample_image(x), atol=1e-5, rtol=0)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # the residual stays float32 under autocast
        assert upsample_image_phases(x).dtype == torch.float32


def test_bf16_moves_the_output_by_at_most_a_few_levels(tiny_cfg):
    torch.manual_seed(0)
    model = random_frvsr(tiny_cfg).eval()
    clip = [np.random.default_rng(i).integers(0, 255, (16, 24, 3), dtype=np.uint8) for i in range(4)]
    full = np.stack(list(super_resolve(model, clip, precision="fp32"))).astype(int)
    half = np.stack(list(super_resolve(model, clip, precision="bf16"))).astype(int)
    assert full.shape == half.shape == (4, 64, 96, 3)
    diff = np.abs(full - half)
    assert diff.mean() < 0.5 and diff.max() <= 4, (diff.mean(), diff.max())
    # autocast is entered per step, never left on for the caller between frames
    it = super_resolve(model, clip, precision="bf16")
    next(it)
    assert not torch.is_autocast_enabled("cpu")


def test_pad_to_multiple_handles_tiny_and_odd_sides():
    assert pad_to_multiple(torch.rand(1, 3, 37, 53)).shape[-2:] == (40, 56)
    assert pad_to_multiple(torch.rand(1, 3, 3, 5)).shape[-2:] == (8, 8)  # replicate: reflect would fail
    x = torch.rand(1, 3, 16, 8)
    assert pad_to_multiple(x) is x


@pytest.mark.parametrize("upsampler", ["pixelshuffle", "deconv"])
@pytest.mark.parametrize("h,w", [(37, 53), (8, 8), (5, 3)])
def test_output_is_exactly_4x_for_any_size(h, w, upsampler):
    model = FRVSR(FRVSRConfig(channels=8, blocks=1, fnet_channels=4, upsampler=upsampler)).eval()
    hr, flows = model(torch.rand(2, 3, 3, h, w))
    assert hr.shape == (2, 3, 3, 4 * h, 4 * w)
    assert flows.shape == (2, 3, 2, h, w)


def test_recurrence_uses_the_previous_estimate(tiny_cfg):
    """Frame 2's output must depend on frame 1 (the warped estimate feeds SRNet)."""
    torch.manual_seed(0)
    model = random_frvsr(tiny_cfg).eval()
    a, b = torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 8)
    c = torch.rand(1, 3, 8, 8)
    with torch.no_grad():
        out1 = list(model.iterate([a, c]))[1][0]
        out2 = list(model.iterate([b, c]))[1][0]
    assert not torch.allclose(out1, out2)


def test_hidden_state_carries_the_past_on_its_own(tiny_cfg):
    """With the warped estimate cut off from SRNet, frame 2 still depends on frame 1 through the
    feature state; with ``hidden=0`` it then cannot."""
    a, b, c = (torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(i)) for i in range(3))
    for hidden, depends in ((4, True), (0, False)):
        model = random_frvsr(FRVSRConfig(**{**vars(tiny_cfg), "hidden": hidden})).eval()
        with torch.no_grad():
            model.srnet.head.weight[:, 3 : 3 + 48] = 0  # SRNet no longer sees the warped previous estimate
            out1 = list(model.iterate([a, c]))[1][0]
            out2 = list(model.iterate([b, c]))[1][0]
        assert (not torch.allclose(out1, out2)) is depends


def test_scene_cut_restarts_the_recurrence(tiny_cfg):
    """Across a cut, the output equals that of a fresh clip starting at the cut."""
    torch.manual_seed(0)
    model = random_frvsr(tiny_cfg).eval()
    shot_a = [torch.full((1, 3, 8, 8), 0.1) + 0.01 * torch.rand(1, 3, 8, 8) for _ in range(3)]
    shot_b = [torch.full((1, 3, 8, 8), 0.9) + 0.01 * torch.rand(1, 3, 8, 8) for _ in range(2)]
    with torch.no_grad():
        joined = [o[0] for o in model.iterate(shot_a + shot_b, cut_threshold=0.3)]
        fresh = [o[0] for o in model.iterate(shot_b, cut_threshold=0.3)]
        no_cut = [o[0] for o in model.iterate(shot_a + shot_b, cut_threshold=None)]
    assert torch.allclose(joined[3], fresh[0], atol=1e-6)
    assert torch.allclose(joined[4], fresh[1], atol=1e-6)
    assert not torch.allclose(no_cut[3], fresh[0], atol=1e-4)


def test_no_state_is_kept_between_clips(tiny_cfg):
    model = random_frvsr(tiny_cfg).eval()
    clip = [np.random.default_rng(1).integers(0, 255, (12, 10, 3), dtype=np.uint8) for _ in range(3)]
    first = list(super_resolve(model, clip))
    list(super_resolve(model, [np.zeros((20, 20, 3), np.uint8)] * 2))  # another clip, another size
    again = list(super_resolve(model, clip))
    assert all(np.array_equal(x, y) for x, y in zip(first, again, strict=True))
    assert first[0].shape == (48, 40, 3) and first[0].dtype == np.uint8


def test_super_resolve_is_lazy(tiny_cfg):
    """A generator in, one frame out per frame in: the clip is never materialised."""
    model = random_frvsr(tiny_cfg).eval()
    pulled = []

    def frames():
        for i in range(5):
            pulled.append(i)
            yield np.zeros((8, 8, 3), np.uint8)

    it = super_resolve(model, frames())
    next(it)
    assert pulled == [0]


def test_super_resolve_rejects_bad_frames(tiny_cfg):
    model = FRVSR(tiny_cfg)
    with pytest.raises(ValueError, match="uint8"):
        list(super_resolve(model, [np.zeros((8, 8), np.uint8)]))
    with pytest.raises(ValueError, match="size"):
        list(super_resolve(model, [np.zeros((8, 8, 3), np.uint8), np.zeros((8, 16, 3), np.uint8)]))


def test_checkpoint_round_trip_rebuilds_the_architecture(tmp_path):
    cfg = FRVSRConfig(channels=12, blocks=2, fnet_channels=4, upsampler="deconv", residual=False)
    model = random_frvsr(cfg).eval()
    save_checkpoint(tmp_path / "m.pth", model, epoch=3)
    loaded, ckpt = load_checkpoint(tmp_path / "m.pth", channels_last=False)
    assert loaded.cfg == cfg and ckpt["epoch"] == 3
    x = torch.rand(1, 2, 3, 8, 8)
    with torch.no_grad():
        assert torch.equal(model(x)[0], loaded(x)[0])
        # the inference layout (NHWC weights) computes the same function, up to float rounding
        fast, _ = load_checkpoint(tmp_path / "m.pth")
        assert fast.srnet.head.weight.is_contiguous(memory_format=torch.channels_last)
        torch.testing.assert_close(fast(x)[0], model(x)[0], atol=1e-5, rtol=0)
    assert not list(tmp_path.glob("*.tmp"))


def test_load_checkpoint_errors_name_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        load_checkpoint(tmp_path / "nope.pth")
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="bad.pth"):
        load_checkpoint(bad)


def test_config_rejects_unknown_keys_and_bad_values():
    with pytest.raises(ValueError, match="valid"):
        FRVSRConfig.from_dict({"channels": 8, "colour": 1})
    with pytest.raises(ValueError, match="upsampler"):
        FRVSRConfig(upsampler="nearest")


def test_model_trains_on_a_moving_clip(tiny_cfg):
    """A few optimisation steps reduce the loss: gradients reach both FNet and SRNet."""
    from testing.helpers import moving_clip
    from train.config import TrainConfig
    from train.data import degrade
    from train.losses import frvsr_loss

    torch.manual_seed(0)
    hr = to_tensor(moving_clip(4, 32, 32)).unsqueeze(0)  # (1, 4, 3, 32, 32)
    lr = degrade(hr)
    model = FRVSR(tiny_cfg)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(15):
        opt.zero_grad()
        loss, _ = frvsr_loss(model, lr, hr, TrainConfig().flow_loss_weight)
        loss.backward()
        losses.append(loss.item())
        opt.step()
    assert losses[-1] < losses[0]
    assert model.fnet.body[0].weight.grad.abs().sum() > 0


def test_a_fresh_model_starts_at_bicubic_with_zero_flow(tiny_cfg):
    model = FRVSR(tiny_cfg).eval()
    lr = torch.rand(1, 4, 3, 16, 24)
    with torch.no_grad():
        hr, flows = model(lr)
    assert torch.equal(flows, torch.zeros_like(flows))
    bicubic = torch.stack([upsample_image(f) for f in lr.unbind(1)], dim=1)
    torch.testing.assert_close(hr, bicubic, atol=1e-5, rtol=0)


def test_rep_blocks_fold_into_a_plain_network_with_the_same_output():
    rep = FRVSR(FRVSRConfig(channels=8, blocks=2, fnet_channels=4, hidden=4, block="rep")).eval()
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in rep.srnet.parameters():  # trained-looking weights: the zero-initialised last layer would hide errors
            p.copy_(torch.randn(p.shape, generator=gen) * 0.1)
    plain = rep.fused()
    assert plain.cfg.block == "plain" and not any(isinstance(m, RepConv) for m in plain.modules())
    assert sum(p.numel() for p in plain.parameters()) < sum(p.numel() for p in rep.parameters())
    clip = torch.rand(1, 4, 3, 16, 24, generator=gen)
    with torch.no_grad():
        want, _ = rep(clip)
        got, _ = plain(clip)
    assert want.abs().max() > 0.1  # a real output, not the bicubic residual alone
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    assert FRVSR(FRVSRConfig(channels=8, blocks=1, fnet_channels=4)).fused().cfg.block == "plain"
    with pytest.raises(ValueError, match="block"):
        FRVSRConfig(block="dense")


def test_backward_pass_lets_a_frame_see_the_frames_after_it(tiny_cfg):
    """With ``backward`` > 0 frame 1's output depends on frame 2 (the backward recurrence carries it back); the
    streaming model's cannot; a scene cut stops what comes back, as it stops what goes forward."""
    a, b, c, d = (torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(i)) for i in range(4))
    for backward, depends in ((4, True), (0, False)):
        model = random_frvsr(FRVSRConfig(**{**vars(tiny_cfg), "backward": backward})).eval()
        with torch.no_grad():
            out1 = list(model.iterate([a, b, c]))[0][0]
            out2 = list(model.iterate([a, b, d]))[0][0]
        assert (not torch.allclose(out1, out2)) is depends
    model = random_frvsr(FRVSRConfig(**{**vars(tiny_cfg), "backward": 4})).eval()
    shot_a = [torch.full((1, 3, 8, 8), 0.1) + 0.01 * torch.rand(1, 3, 8, 8) for _ in range(2)]
    with torch.no_grad():
        alone = [o[0] for o in model.iterate(shot_a, cut_threshold=0.3)]
        before_cut = [o[0] for o in model.iterate(shot_a + [torch.full((1, 3, 8, 8), 0.9)], cut_threshold=0.3)]
        no_cut = [o[0] for o in model.iterate(shot_a + [torch.full((1, 3, 8, 8), 0.9)], cut_threshold=None)]
    torch.testing.assert_close(before_cut[1], alone[1], atol=1e-6, rtol=0)
    assert not torch.allclose(no_cut[1], alone[1], atol=1e-4)


def test_backward_model_trains_folds_and_round_trips(tmp_path):
    cfg = FRVSRConfig(channels=8, blocks=1, fnet_channels=4, hidden=4, backward=4, backward_blocks=1, block="rep")
    model = random_frvsr(cfg)
    clip = torch.rand(2, 3, 3, 16, 16)
    out, flows = model(clip, torch.zeros(2, 3, 2, 16, 16))
    assert out.shape == (2, 3, 3, 64, 64) and flows.shape == (2, 3, 2, 16, 16)
    out.mean().backward()
    assert model.bnet.head.weight.grad.abs().sum() > 0  # the loss reaches the backward recurrence
    model.eval()
    with torch.no_grad():
        want, _ = model(clip)
        got, _ = model.fused()(clip)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    save_checkpoint(tmp_path / "b.pth", model)
    loaded, _ = load_checkpoint(tmp_path / "b.pth", channels_last=False)
    assert loaded.cfg.backward == 4 and loaded.cfg.backward_blocks == 1
    with pytest.raises(ValueError, match="whole clips"):
        model.step(clip[:, 0], clip[:, 0], torch.zeros(2, 3, 64, 64), torch.zeros(2, 4, 16, 16))


@pytest.mark.parametrize(
    "changes",
    [
        {"block": "rep"},
        {"backward": 4},
        {"hidden": 6},
        {"block": "rep", "backward": 4, "backward_blocks": 1, "hidden": 6},
    ],
)
def test_a_grown_model_starts_with_the_same_output_and_every_part_learns(changes, tiny_cfg):
    small = random_frvsr(tiny_cfg).eval()
    big = small.grown(**changes)
    assert all(getattr(big.cfg, k) == v for k, v in changes.items())
    assert sum(p.numel() for p in big.parameters()) > sum(p.numel() for p in small.parameters())
    clip = torch.rand(1, 4, 3, 16, 24, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want, _ = small(clip)
        got, _ = big(clip)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    big.train()
    out, _ = big(clip)
    out.square().mean().backward()
    frozen = [
        n for n, p in big.named_parameters() if not n.startswith("fnet.") and (p.grad is None or not p.grad.any())
    ]
    # what reads a new part through zero weights gets a gradient at once; the part itself only after one step
    assert all(n.startswith("bnet.") or n.startswith("srnet.state.") for n in frozen), frozen


def test_grow_refuses_what_it_cannot_keep_equal(tiny_cfg):
    model = random_frvsr(tiny_cfg)
    for bad in ({"channels": 16}, {"hidden": 2}):
        with pytest.raises(ValueError, match="grow"):
            model.grown(**bad)
    with pytest.raises(ValueError, match="fused"):
        model.grown(block="rep").grown(block="plain")
