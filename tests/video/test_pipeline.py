"""video/pipeline.py: decode -> super_resolve -> encode, streamed through bounded queues in threads."""

from __future__ import annotations

import base64
import io
import threading

import av
import numpy as np
import pytest

from model.inference import super_resolve
from testing.clips import decode_frames, make_video, probe
from video.io import VideoReader
from video.pipeline import open_job, upscale_video
from video.settings import HandlerSettings
from wire.errors import LimitExceeded, Unprocessable
from wire.limits import Limits


def _tiny_settings(**kw) -> HandlerSettings:
    return HandlerSettings.from_dict({"torch_threads": 1, "x264_preset": "ultrafast", **kw})


@pytest.mark.parametrize(
    "kind,audio,out_format,family,codec",
    [
        ("avi_mjpeg", False, None, "avi", "h264"),
        ("mp4_h264", True, None, "mp4", "h264"),
        ("mov_mpeg4", False, None, "mp4", "h264"),
        ("mkv_ffv1", True, None, "mkv", "h264"),
        ("webm_vp9", False, None, "webm", "vp9"),
        ("avi_raw", True, "mkv", "mkv", "h264"),
    ],
)
def test_upscale_video_keeps_container_frames_timestamps_and_audio(tiny_model, kind, audio, out_format, family, codec):
    data = make_video(kind, frames=8, width=24, height=16, fps=12, audio=audio)
    src = probe(data)
    res = upscale_video(tiny_model, VideoReader(data), _tiny_settings(), out_format)
    out = probe(res.video)
    assert res.family == family and out["codec"] == codec
    assert (out["width"], out["height"]) == (4 * src["width"], 4 * src["height"])
    assert out["frames"] == src["frames"] == res.timings.frames
    assert out["fps"] == src["fps"]
    seconds = lambda p: [float((t - p["pts"][0]) * p["time_base"]) for t in p["pts"]]  # noqa: E731
    assert np.allclose(seconds(out), seconds(src), atol=1e-3)
    assert out["audio"] == src["audio"]
    if audio:
        assert out["audio_packets"] == src["audio_packets"]


def test_audio_that_cannot_go_into_the_requested_container_is_422(tiny_model):
    data = make_video("avi_mjpeg", frames=4, width=16, height=16, audio=True)  # PCM audio
    with pytest.raises(Unprocessable, match=r"pcm_s16le.*WEBM.*mkv"):
        upscale_video(tiny_model, VideoReader(data), _tiny_settings(), "webm")


def test_upscale_video_matches_super_resolve(tiny_model):
    """The pipeline is the model's own clip function plus I/O: lossless in -> the same frames as super_resolve."""
    data = make_video("avi_raw", frames=4, width=16, height=16)
    expected = list(super_resolve(tiny_model, decode_frames(data)))
    settings = _tiny_settings(x264_crf=0, x264_crf_full_chroma=0)  # lossless H.264; 4:2:0 keeps luma at full res
    got = decode_frames(upscale_video(tiny_model, VideoReader(data), settings, "mkv").video)
    assert len(got) == len(expected)
    luma = lambda x: x.astype(float) @ [0.299, 0.587, 0.114]  # noqa: E731
    for g, e in zip(got, expected, strict=True):
        assert np.abs(luma(g) - luma(e)).mean() < 2


@pytest.mark.parametrize("family", ["mkv", "mp4"])
def test_fidelity_mode_keeps_rgb_exactly(tiny_model, family):
    """x264_rgb with CRF 0: RGB H.264, no chroma subsampling, so every pixel equals super_resolve's."""
    data = make_video("avi_raw", frames=3, width=16, height=16)
    expected = list(super_resolve(tiny_model, decode_frames(data)))
    settings = _tiny_settings(x264_crf=0, x264_crf_full_chroma=0, x264_rgb=True)
    out = upscale_video(tiny_model, VideoReader(data), settings, family)
    assert probe(out.video)["codec"] == "h264"
    got = decode_frames(out.video)
    assert len(got) == len(expected)
    for g, e in zip(got, expected, strict=True):
        assert np.array_equal(g, e)


@pytest.mark.parametrize(
    "kind,keep,out_pix_fmt",
    [
        ("avi_raw", True, "gbrp"),  # an RGB source comes back as RGB H.264 (decoded as planar RGB)
        ("avi_raw", False, "yuv420p"),
        ("mp4_h264", True, "yuv420p"),  # 4:2:0 sources (nearly all) stay 4:2:0: browser-playable
        ("mkv_ffv1", True, "yuv420p"),
    ],
)
def test_output_keeps_the_sources_colour_resolution(tiny_model, kind, keep, out_pix_fmt):
    data = make_video(kind, frames=3, width=16, height=16)
    out = upscale_video(tiny_model, VideoReader(data), _tiny_settings(keep_full_chroma=keep), "mkv")
    with av.open(io.BytesIO(out.video)) as c:
        assert c.streams.video[0].codec_context.pix_fmt == out_pix_fmt


def test_rgb_source_round_trips_exactly_by_default(tiny_model):
    """An RGB source at CRF 0 comes back pixel-identical to super_resolve, without any fidelity flag."""
    data = make_video("avi_raw", frames=3, width=16, height=16)
    expected = super_resolve(tiny_model, decode_frames(data))
    out = upscale_video(tiny_model, VideoReader(data), _tiny_settings(x264_crf=0, x264_crf_full_chroma=0), "mp4")
    got = decode_frames(out.video)
    assert all(np.array_equal(g, e) for g, e in zip(got, expected, strict=True))


def test_pipeline_streams_with_bounded_buffers(tiny_model, monkeypatch):
    """Never more than the queues' worth of 4x frames exists between the model and the encoder."""
    import video.pipeline as pl
    from video.io import VideoWriter

    produced, consumed, peak = [0], [0], [0]
    real_sr, real_write = pl.super_resolve, VideoWriter.write

    def counting_sr(*a, **k):
        for hr in real_sr(*a, **k):
            produced[0] += 1
            peak[0] = max(peak[0], produced[0] - consumed[0])
            yield hr

    def counting_write(self, rgb, pts):
        real_write(self, rgb, pts)
        consumed[0] += 1

    monkeypatch.setattr(pl, "super_resolve", counting_sr)
    monkeypatch.setattr(VideoWriter, "write", counting_write)
    settings = _tiny_settings(queue_frames=2)
    res = upscale_video(tiny_model, VideoReader(make_video("avi_mjpeg", frames=30, width=16, height=16)), settings)
    assert res.timings.frames == 30 and consumed[0] == 30
    assert peak[0] <= settings.queue_frames + 2


def test_pipeline_error_mid_clip_stops_all_threads(tiny_model):
    before = threading.active_count()
    data = make_video("mkv_ffv1", frames=20, width=16, height=16)
    with pytest.raises(LimitExceeded, match="frames"):
        upscale_video(tiny_model, VideoReader(data), _tiny_settings(max_frames=5, queue_frames=1))
    assert threading.active_count() == before


def test_corrupt_video_is_a_client_error(tiny_model):
    """A frame FFmpeg cannot decode mid-clip is a 422 naming where decoding failed, and no thread is left."""
    data = bytearray(make_video("avi_mjpeg", frames=10, width=32, height=32))
    with av.open(io.BytesIO(bytes(data))) as c:
        packets = [(p.pos, p.size) for p in c.demux(video=0) if p.size]
    pos, size = packets[5]
    data[pos : pos + size] = bytes(size)  # frame 5's JPEG is all zeros: no decoder can conceal that
    before = threading.active_count()
    with pytest.raises(Unprocessable, match=r"the video is corrupt: decoding failed after 5 frames") as ei:
        upscale_video(tiny_model, VideoReader(bytes(data)), _tiny_settings())
    assert ei.value.status == 422
    assert threading.active_count() == before


def test_open_job_checks_header_before_decoding():
    settings = HandlerSettings(limits=Limits(max_seconds=1.0))
    body = {"content": base64.b64encode(make_video("mp4_h264", frames=30, fps=10)).decode()}
    with pytest.raises(LimitExceeded, match=r"duration 3.000 s.*max_seconds"):
        open_job(body, settings)
