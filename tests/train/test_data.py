"""Dataset discovery (seed and Vimeo layouts), image conversion, bad data, degradation, crops."""

import logging

import cv2
import numpy as np
import pytest
import torch

from testing.helpers import moving_clip, write_clip
from train.data import (
    DataError,
    TrainClips,
    degrade,
    discover_samples,
    natural_key,
    read_clip,
    read_image,
    split_samples,
)


def test_natural_sort_orders_frame_numbers():
    names = ["frame_10.png", "frame_2.png", "frame_1.png"]
    assert sorted(names, key=natural_key) == ["frame_1.png", "frame_2.png", "frame_10.png"]


def test_seed_layout_with_natural_order(tmp_path):
    clip = moving_clip(12, 16, 16)
    write_clip(tmp_path / "dataset" / "sample_x", clip)
    (s,) = discover_samples(tmp_path / "dataset")
    assert s.name == "sample_x"
    assert [p.name for p in s.frames][:3] == ["frame_1.png", "frame_2.png", "frame_3.png"]
    assert s.frames[-1].name == "frame_12.png"
    assert np.array_equal(read_clip(s), clip)


def test_vimeo_layout_and_split_lists(tmp_path):
    root = tmp_path / "vimeo"
    for name in ["00001/0001", "00001/0002", "00002/0001"]:
        write_clip(root / "sequences" / name, moving_clip(7, 16, 16), pattern="im{}.png")
    (root / "sep_trainlist.txt").write_text("00001/0001\n00001/0002\n")
    (root / "sep_testlist.txt").write_text("00002/0001\n")
    samples = discover_samples(root)
    assert [s.name for s in samples] == ["00001/0001", "00001/0002", "00002/0001"]
    train, val = split_samples(root, samples, 0.2, 0)
    assert [s.name for s in train] == ["00001/0001", "00001/0002"]
    assert [s.name for s in val] == ["00002/0001"]


def test_random_split_is_seeded_and_disjoint(seed_dataset):
    samples = discover_samples(seed_dataset)
    a = split_samples(seed_dataset, samples, 0.25, seed=3)
    b = split_samples(seed_dataset, samples, 0.25, seed=3)
    assert [s.name for s in a[1]] == [s.name for s in b[1]] and len(a[1]) == 1
    assert not {s.name for s in a[0]} & {s.name for s in a[1]}


def test_short_folders_are_skipped_with_one_warning(tmp_path, caplog):
    write_clip(tmp_path / "good", moving_clip(7, 16, 16))
    write_clip(tmp_path / "short_a", moving_clip(3, 16, 16))
    write_clip(tmp_path / "short_b", moving_clip(2, 16, 16))
    with caplog.at_level(logging.WARNING):
        samples = discover_samples(tmp_path)
    assert [s.name for s in samples] == ["good"]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "short_a" in warnings[0].message and "short_b" in warnings[0].message


def test_missing_path_and_empty_dataset_are_clear_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        discover_samples(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no usable sample"):
        discover_samples(tmp_path / "empty")


def test_unreadable_image_is_named(tmp_path):
    folder = write_clip(tmp_path / "s", moving_clip(7, 16, 16))
    (folder / "frame_4.png").write_bytes(b"garbage")
    (s,) = discover_samples(tmp_path)
    with pytest.raises(DataError, match="frame_4.png"):
        read_clip(s)


def test_frames_of_different_sizes_name_the_sample(tmp_path):
    folder = write_clip(tmp_path / "mixed", moving_clip(7, 16, 16))
    cv2.imwrite(str(folder / "frame_7.png"), np.zeros((20, 16, 3), np.uint8))
    (s,) = discover_samples(tmp_path)
    with pytest.raises(DataError, match="mixed"):
        read_clip(s)


@pytest.mark.parametrize("ext", [".png", ".jpg", ".bmp"])
def test_formats_and_modes_become_8bit_rgb(tmp_path, ext):
    rgb = np.zeros((8, 8, 3), np.uint8)
    rgb[..., 0] = 200  # red
    cv2.imwrite(str(tmp_path / f"c{ext}"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    img = read_image(tmp_path / f"c{ext}")
    assert img.dtype == np.uint8 and img.shape == (8, 8, 3)
    assert abs(int(img[0, 0, 0]) - 200) < 6 and img[0, 0, 2] < 6  # channel order is RGB


def test_gray_rgba_and_16bit(tmp_path):
    cv2.imwrite(str(tmp_path / "g.png"), np.full((8, 8), 77, np.uint8))
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[..., 2], rgba[..., 3] = 255, 128  # BGRA: red, half transparent
    cv2.imwrite(str(tmp_path / "a.png"), rgba)
    cv2.imwrite(str(tmp_path / "d.png"), np.full((8, 8, 3), 65535, np.uint16))
    assert read_image(tmp_path / "g.png").shape == (8, 8, 3) and read_image(tmp_path / "g.png")[0, 0, 1] == 77
    assert tuple(read_image(tmp_path / "a.png")[0, 0]) == (255, 0, 0)
    d = read_image(tmp_path / "d.png")
    assert d.dtype == np.uint8 and d.max() == 255


def test_bicubic_degradation_matches_area_mean_on_flat_images():
    hr = torch.full((2, 3, 32, 48), 0.4)
    lr = degrade(hr)
    assert lr.shape == (2, 3, 8, 12)
    assert torch.allclose(lr, torch.full_like(lr, round(0.4 * 255) / 255))


def test_blur_degradation_takes_every_4th_pixel_of_the_blurred_image():
    hr = torch.zeros(1, 3, 32, 32)
    hr[..., 16, 16] = 1.0  # an impulse lands on a sampled pixel
    lr = degrade(hr, "blur")
    assert lr.shape == (1, 3, 8, 8)
    assert lr[0, 0].argmax().item() == 4 * 8 + 4  # the impulse stays at (4, 4)
    with pytest.raises(ValueError, match="degradation"):
        degrade(hr, "nearest")
    with pytest.raises(ValueError, match="multiple"):
        degrade(torch.zeros(1, 3, 30, 32))


def test_training_windows_have_the_right_shapes(seed_dataset):
    ds = TrainClips(discover_samples(seed_dataset), num_frames=5, crop_size=32, degradation="bicubic", crops_per_clip=3)
    assert len(ds) == 12
    lr, hr = ds[0]
    assert lr.shape == (5, 3, 8, 8) and hr.shape == (5, 3, 32, 32)
    assert 0 <= hr.min() and hr.max() <= 1
    with pytest.raises(DataError, match="smaller"):
        TrainClips(discover_samples(seed_dataset), num_frames=5, crop_size=96, degradation="bicubic", crops_per_clip=1)
