"""handler/video.py: reading any container in memory, what it reports, and what it refuses."""

from __future__ import annotations

import pytest

from testing.clips import audio_only, make_video
from video.io import VideoReader, container_family, full_chroma
from wire.errors import LimitExceeded, Unprocessable, UnsupportedMedia
from wire.limits import Limits


@pytest.mark.parametrize(
    "name,family",
    [("avi", "avi"), ("mov,mp4,m4a,3gp,3g2,mj2", "mp4"), ("flv", "mp4"), ("ivf", "webm")],
)
def test_container_family(name, family):
    assert container_family(name, b"") == family


def test_matroska_vs_webm_from_doctype():
    assert VideoReader(make_video("mkv_ffv1", frames=2)).info.family == "mkv"
    assert VideoReader(make_video("webm_vp9", frames=2)).info.family == "webm"


def test_reader_rejects_non_video():
    with pytest.raises(UnsupportedMedia, match="not a video FFmpeg can read"):
        VideoReader(b"hello, this is a text file and not a video at all\n" * 20)


def test_reader_rejects_audio_only():
    with pytest.raises((Unprocessable, UnsupportedMedia)):
        VideoReader(audio_only("wav", "pcm_s16le"))  # WAV is not on the demuxer whitelist, and has no video anyway


def test_frames_enforce_limits_the_header_does_not_state():
    data = make_video("mkv_ffv1", frames=12)  # Matroska headers carry no frame count
    reader = VideoReader(data)
    assert reader.info.frames is None
    with pytest.raises(LimitExceeded, match="11 frames"):
        for _ in reader.frames(Limits(max_frames=10)):
            pass


def test_a_444_source_stays_444():
    assert full_chroma("yuv444p") and full_chroma("bgr0") and full_chroma("gbrp")
    assert not any(full_chroma(p) for p in ("yuv420p", "yuvj420p", "nv12", "yuv422p", "gray", None, "nonsense"))


@pytest.mark.parametrize("muxer", ["mp4", "matroska"])
def test_bits_per_pixel_follows_the_compression(muxer):
    """The stream's rate where the container states it (MP4), else the file's over its duration (MKV)."""
    from testing.clips import encode_video, moving_clip

    clip = moving_clip(20, 64, 96, dx=2, dy=1, seed=4)
    bpp = {}
    for crf in (12, 32):
        data = encode_video(clip, "mp4_h264", fps=25, muxer=muxer, options={"crf": str(crf), "preset": "veryfast"})
        r = VideoReader(data)
        bpp[crf] = r.info.bits_per_pixel
        assert r.info.bit_rate and abs(r.info.bit_rate / 8 * 20 / 25 - len(data)) < 0.5 * len(data)
        r.close()
    assert bpp[12] > 2 * bpp[32] > 0
