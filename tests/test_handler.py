"""The TorchServe handler without a server: request parsing, limits, video I/O, the streaming pipeline, and
``handle()`` with TorchServe's MockContext."""

from __future__ import annotations

import base64
import json
import threading

import numpy as np
import pytest
import yaml
from clips import make_video, probe
from ts.torch_handler.unit_tests.test_utils.mock_context import MockContext
from ts.utils.util import PredictionException

from handler.errors import BadRequest, LimitExceeded, Unprocessable, UnsupportedMedia
from handler.settings import HandlerSettings, Limits
from handler.payload import decode_content, parse_body
from handler.pipeline import open_job, upscale_video
from handler.video import VideoReader, container_family
from model.frvsr import FRVSR, save_checkpoint

VIDEO = b"\x00\x01\x02binary video bytes\xff" * 5


# ----------------------------------------------------------------------------- payload

@pytest.mark.parametrize(
    "text",
    [
        base64.b64encode(VIDEO).decode(),
        str(base64.b64encode(VIDEO)),  # the platform example's b'...' form
        str(base64.encodebytes(VIDEO)),  # b'...' with escaped newlines
        base64.encodebytes(VIDEO).decode(),  # MIME line breaks
        "data:video/avi;base64," + base64.b64encode(VIDEO).decode(),
        base64.urlsafe_b64encode(VIDEO).decode().rstrip("="),  # URL-safe, no padding
    ],
)
def test_decode_content_accepts_common_forms(text):
    assert decode_content(text) == VIDEO


@pytest.mark.parametrize("text,words", [("", "empty"), ("abc$def", "'$' at position 3"), ("A", "cannot be base64")])
def test_decode_content_rejects_with_reason(text, words):
    with pytest.raises(BadRequest) as ei:
        decode_content(text)
    assert words in str(ei.value)


@pytest.mark.parametrize(
    "body,words",
    [
        (b"not json {", "raw"),  # raw bytes that are not JSON are taken as a video file (direct curl -T)
        (b'{"content": ', "not valid JSON"),
        ("[1, 2]", "JSON object"),
        ({"video": "AAAA"}, 'missing "content"'),
        ({"content": 123}, "must be a base64 string, got int"),
        ({"content": None}, "must be a base64 string"),
        ({"content": "AAAA", "format": "gif"}, '"format" must be one of'),
    ],
)
def test_parse_body_errors(body, words):
    if words == "raw":
        assert parse_body(body).video == body
        return
    with pytest.raises(BadRequest, match=words):
        parse_body(body)


def test_parse_body_dict_str_and_bytes_agree():
    d = {"content": base64.b64encode(VIDEO).decode(), "format": "MKV"}
    for body in (d, json.dumps(d), json.dumps(d).encode()):
        req = parse_body(body)
        assert req.video == VIDEO and req.out_format == "mkv"


# ----------------------------------------------------------------------------- settings and limits

def test_limits_messages_name_limit_value_and_how_to_raise():
    lim = Limits()
    with pytest.raises(LimitExceeded, match=r"201x200 = 40200 pixels.*40000.*--max_pixels"):
        lim.check_area(201, 200)
    lim.check_area(250, 160)  # the limit is the area, not each side
    with pytest.raises(LimitExceeded, match=r"6.000 s.*5 s.*--max_seconds"):
        lim.check_seconds(6.0, 30)
    lim.check_seconds(5.0 + 0.4 / 30, 30)  # container clock rounding is tolerated
    with pytest.raises(LimitExceeded, match=r"301 frames.*300.*--max_frames"):
        lim.check_frames(301)
    assert lim.max_input_bytes() > 200 * 200 * 3 * 300


def test_handler_settings_round_trip_and_unknown_keys():
    s = HandlerSettings.from_dict({"max_frames": 10, "x264_crf": 20, "torch_threads": 1})
    assert s.limits.max_frames == 10 and s.encoder.x264_crf == 20 and s.torch_threads == 1
    assert HandlerSettings.from_dict(s.to_dict()) == s
    with pytest.raises(ValueError, match="unknown handler settings.*max_frame'.*valid.*max_frames"):
        HandlerSettings.from_dict({"max_frame": 3})
    assert HandlerSettings.from_dict({"precision": "fp32"}).precision == "fp32"
    with pytest.raises(ValueError, match="precision must be one of.*'int8'"):
        HandlerSettings.from_dict({"precision": "int8"})


def test_model_config_template_is_valid():
    from conftest import ROOT

    cfg = yaml.safe_load((ROOT / "handler" / "model-config.yaml").read_text())
    assert HandlerSettings.from_dict(cfg["handler"]) == HandlerSettings()
    assert cfg["batchSize"] == 1 and cfg["responseTimeout"] > 0


# ----------------------------------------------------------------------------- video I/O

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
    import io

    import av

    buf = io.BytesIO()
    with av.open(buf, "w", format="wav") as c:
        a = c.add_stream("pcm_s16le", rate=8000)
        a.layout = "mono"
        f = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16", layout="mono")
        f.sample_rate = 8000
        c.mux(a.encode(f))
        c.mux(a.encode(None))
    with pytest.raises((Unprocessable, UnsupportedMedia)):
        VideoReader(buf.getvalue())  # WAV is not on the demuxer whitelist, and has no video anyway


def test_frames_enforce_limits_the_header_does_not_state():
    data = make_video("mkv_ffv1", frames=12)  # Matroska headers carry no frame count
    reader = VideoReader(data)
    assert reader.info.frames is None
    with pytest.raises(LimitExceeded, match="11 frames"):
        for _ in reader.frames(Limits(max_frames=10)):
            pass


def _tiny_settings(**kw) -> HandlerSettings:
    return HandlerSettings.from_dict({"torch_threads": 1, "x264_preset": "ultrafast", **kw})


@pytest.fixture(scope="module")
def tiny_model():
    from conftest import random_frvsr
    from model.frvsr import FRVSRConfig

    return random_frvsr(FRVSRConfig(channels=8, blocks=1, fnet_channels=4)).eval()


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
    import io

    import av

    from model.frvsr import super_resolve

    data = make_video("avi_raw", frames=4, width=16, height=16)
    with av.open(io.BytesIO(data)) as c:
        lr = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    expected = list(super_resolve(tiny_model, lr))
    settings = _tiny_settings(x264_crf=0, x264_crf_full_chroma=0)  # lossless H.264; 4:2:0 keeps luma at full resolution
    out = upscale_video(tiny_model, VideoReader(data), settings, "mkv")
    with av.open(io.BytesIO(out.video)) as c:
        got = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    assert len(got) == len(expected)
    luma = lambda x: x.astype(float) @ [0.299, 0.587, 0.114]  # noqa: E731
    for g, e in zip(got, expected):
        assert np.abs(luma(g) - luma(e)).mean() < 2


@pytest.mark.parametrize("family", ["mkv", "mp4"])
def test_fidelity_mode_keeps_rgb_exactly(tiny_model, family):
    """x264_rgb with CRF 0: RGB H.264, no chroma subsampling, so every pixel equals super_resolve's."""
    import io

    import av

    from model.frvsr import super_resolve

    data = make_video("avi_raw", frames=3, width=16, height=16)
    with av.open(io.BytesIO(data)) as c:
        lr = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    expected = list(super_resolve(tiny_model, lr))
    out = upscale_video(tiny_model, VideoReader(data), _tiny_settings(x264_crf=0, x264_crf_full_chroma=0, x264_rgb=True), family)
    with av.open(io.BytesIO(out.video)) as c:
        assert c.streams.video[0].codec_context.name == "h264"
        got = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
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
    import io

    import av

    data = make_video(kind, frames=3, width=16, height=16)
    out = upscale_video(tiny_model, VideoReader(data), _tiny_settings(keep_full_chroma=keep), "mkv")
    with av.open(io.BytesIO(out.video)) as c:
        assert c.streams.video[0].codec_context.pix_fmt == out_pix_fmt


def test_a_444_source_stays_444():
    from handler.video import full_chroma

    assert full_chroma("yuv444p") and full_chroma("bgr0") and full_chroma("gbrp")
    assert not any(full_chroma(p) for p in ("yuv420p", "yuvj420p", "nv12", "yuv422p", "gray", None, "nonsense"))


def test_rgb_source_round_trips_exactly_by_default(tiny_model):
    """An RGB source at CRF 0 comes back pixel-identical to super_resolve, without any fidelity flag."""
    import io

    import av

    from model.frvsr import super_resolve

    data = make_video("avi_raw", frames=3, width=16, height=16)
    with av.open(io.BytesIO(data)) as c:
        lr = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    out = upscale_video(tiny_model, VideoReader(data), _tiny_settings(x264_crf=0, x264_crf_full_chroma=0), "mp4")
    with av.open(io.BytesIO(out.video)) as c:
        got = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    assert all(np.array_equal(g, e) for g, e in zip(got, super_resolve(tiny_model, lr)))


def test_pipeline_streams_with_bounded_buffers(tiny_model, monkeypatch):
    """Never more than the queues' worth of 4x frames exists between the model and the encoder."""
    import handler.pipeline as pl
    from handler.video import VideoWriter

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
    data = bytearray(make_video("avi_mjpeg", frames=10, width=32, height=32))
    data[len(data) // 3 : len(data) // 3 + 2000] = b"\xff" * 2000  # trash the middle frames
    try:
        res = upscale_video(tiny_model, VideoReader(bytes(data)), _tiny_settings())
    except (Unprocessable, UnsupportedMedia):
        return  # rejected with 4xx: fine
    assert res.timings.frames >= 1  # or FFmpeg concealed the damage: also fine, as long as nothing hangs


# ----------------------------------------------------------------------------- the handler, via MockContext

@pytest.fixture(scope="module")
def handler_ctx(tmp_path_factory, tiny_model):
    from handler.frvsr_handler import FRVSRHandler

    d = tmp_path_factory.mktemp("model_dir")
    save_checkpoint(d / "tiny.pth", tiny_model)
    cfg = {"minWorkers": 1, "handler": {"torch_threads": 1, "x264_preset": "ultrafast", "max_frames": 20}}
    (d / "model-config.yaml").write_text(yaml.safe_dump(cfg))
    ctx = MockContext(model_pt_file="tiny.pth", model_dir=str(d), model_file=None, model_yaml_config_file="model-config.yaml")
    h = FRVSRHandler()
    h.initialize(ctx)
    return h, ctx


def test_initialize_builds_model_from_checkpoint_config(handler_ctx):
    import torch

    h, _ = handler_ctx
    assert h.initialized and not h.model.training
    assert h.model.cfg.channels == 8 and h.device == torch.device("cpu")
    assert h.settings.limits.max_frames == 20
    assert torch.get_num_threads() == 1


@pytest.mark.parametrize("literal", [False, True])
def test_handle_returns_plain_base64_of_4x_video(handler_ctx, literal):
    h, ctx = handler_ctx
    data = make_video("avi_mjpeg", frames=6, width=20, height=14, fps=10)
    content = str(base64.b64encode(data)) if literal else base64.b64encode(data).decode()
    out = h.handle([{"body": {"content": content}}], ctx)
    assert isinstance(out, list) and len(out) == 1 and isinstance(out[0], str)
    assert not out[0].startswith("b'")
    info = probe(base64.b64decode(out[0], validate=True))
    assert info["format"] == "avi" and (info["width"], info["height"]) == (80, 56)
    assert info["frames"] == 6 and info["fps"] == 10


@pytest.mark.parametrize(
    "body,status,words",
    [
        ({"nothing": 1}, 400, 'missing "content"'),
        ({"content": 5}, 400, "base64 string"),
        ({"content": "@@@@"}, 400, "not valid base64"),
        ({"content": base64.b64encode(b"just some text, not a video" * 10).decode()}, 415, "not a video"),
        ({"content": base64.b64encode(make_video("avi_mjpeg", frames=2, width=220, height=200)).decode()}, 422, "max_pixels"),
        ({"content": base64.b64encode(make_video("avi_mjpeg", frames=25, width=16, height=16)).decode()}, 422, "max_frames"),
    ],
)
def test_handle_errors_are_prediction_exceptions_with_client_status(handler_ctx, body, status, words):
    h, ctx = handler_ctx
    with pytest.raises(PredictionException) as ei:
        h.handle([{"body": body}], ctx)
    assert ei.value.error_code == status and words in ei.value.message


def test_handle_accepts_raw_json_bytes_and_format(handler_ctx):
    h, ctx = handler_ctx
    body = json.dumps({"content": base64.b64encode(make_video("mp4_h264", frames=3, width=16, height=16)).decode(), "format": "webm"})
    out = h.handle([{"body": body.encode()}], ctx)
    info = probe(base64.b64decode(out[0]))
    assert info["codec"] == "vp9" and "webm" in info["format"] and info["frames"] == 3


def test_open_job_checks_header_before_decoding():
    settings = HandlerSettings(limits=Limits(max_seconds=1.0))
    body = {"content": base64.b64encode(make_video("mp4_h264", frames=30, fps=10)).decode()}
    with pytest.raises(LimitExceeded, match=r"duration 3.000 s.*max_seconds"):
        open_job({"body": body}, settings)
