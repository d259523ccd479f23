"""handler/frvsr_handler.py without a server: ``initialize`` and ``handle()`` with TorchServe's MockContext."""

from __future__ import annotations

import base64
import json

import pytest
import torch
import yaml
from ts.torch_handler.unit_tests.test_utils.mock_context import MockContext
from ts.utils.util import PredictionException

from model.checkpoint import save_checkpoint
from testing.clips import make_video, probe


@pytest.fixture(scope="module")
def handler_ctx(tmp_path_factory, tiny_model):
    from handler.frvsr_handler import FRVSRHandler

    d = tmp_path_factory.mktemp("model_dir")
    save_checkpoint(d / "tiny.pth", tiny_model)
    cfg = {"minWorkers": 1, "handler": {"torch_threads": 1, "x264_preset": "ultrafast", "max_frames": 20}}
    (d / "model-config.yaml").write_text(yaml.safe_dump(cfg))
    ctx = MockContext(
        model_pt_file="tiny.pth", model_dir=str(d), model_file=None, model_yaml_config_file="model-config.yaml"
    )
    h = FRVSRHandler()
    torch.set_num_threads(2)  # the handler must set its worker's threads (1 here) itself
    h.initialize(ctx)
    return h, ctx


def test_initialize_builds_model_from_checkpoint_config(handler_ctx):
    h, _ = handler_ctx
    model = h.models.models["clean"]
    assert h.initialized and not model.training and not h.models.paired
    assert model.cfg.channels == 8 and h.device == torch.device("cpu")
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


def _b64_video(**kw) -> str:
    return base64.b64encode(make_video("avi_mjpeg", **kw)).decode()


@pytest.mark.parametrize(
    "body,status,words",
    [
        ({"nothing": 1}, 400, 'missing "content"'),
        ({"content": 5}, 400, "base64 string"),
        ({"content": "@@@@"}, 400, "not valid base64"),
        ({"content": base64.b64encode(b"just some text, not a video" * 10).decode()}, 415, "not a video"),
        ({"content": _b64_video(frames=2, width=220, height=200)}, 422, "max_pixels"),
        ({"content": _b64_video(frames=25, width=16, height=16)}, 422, "max_frames"),
        ({"content": _b64_video(frames=2, width=16, height=16), "input_quality": "best"}, 400, "'compressed']"),
    ],
)
def test_handle_errors_are_prediction_exceptions_with_client_status(handler_ctx, body, status, words):
    h, ctx = handler_ctx
    with pytest.raises(PredictionException) as ei:
        h.handle([{"body": body}], ctx)
    assert ei.value.error_code == status and words in ei.value.message


def test_handle_accepts_raw_json_bytes_and_format(handler_ctx):
    h, ctx = handler_ctx
    video = make_video("mp4_h264", frames=3, width=16, height=16)
    body = json.dumps({"content": base64.b64encode(video).decode(), "format": "webm"})
    out = h.handle([{"body": body.encode()}], ctx)
    info = probe(base64.b64decode(out[0]))
    assert info["codec"] == "vp9" and "webm" in info["format"] and info["frames"] == 3


# ----------------------------------------------------------------------------- KServe v1 protocol


def _v1_result(out: list) -> dict:
    assert isinstance(out, list) and len(out) == 1 and set(out[0]) == {"predictions"}
    (pred,) = out[0]["predictions"]
    assert set(pred) == {"content", "elapsed_time"} and pred["elapsed_time"] > 0
    return probe(base64.b64decode(pred["content"], validate=True))


@pytest.mark.parametrize("as_bytes", [False, True])
def test_v1_request_without_envelope_gets_v1_predictions(handler_ctx, as_bytes):
    """POST /v1/models/<name>:predict on a plain TorchServe: the row's body is the whole v1 request (bytes when
    the client's Content-Type has a charset, as KServe's wrapper sends)."""
    h, ctx = handler_ctx
    body = {"instances": [{"content": _b64_video(frames=5, width=16, height=12)}]}
    out = h.handle([{"body": json.dumps(body).encode() if as_bytes else body}], ctx)
    info = _v1_result(out)
    assert (info["width"], info["height"], info["frames"]) == (64, 48, 5)


def test_v1_request_through_torchserves_kserve_envelope(handler_ctx):
    """service_envelope=kserve (KServe's runtime): the envelope unwraps "instances" and wraps "predictions"."""
    from ts.torch_handler.request_envelope.kserve import KServeEnvelope

    h, ctx = handler_ctx
    body = {"instances": [{"content": _b64_video(frames=4, width=16, height=16), "format": "mp4"}]}
    out = KServeEnvelope(h.handle).handle([{"body": body}], ctx)
    info = _v1_result(out)
    assert "mp4" in info["format"] and (info["width"], info["frames"]) == (64, 4)


V1_ERRORS = [
    ({"instances": []}, 400, '"instances": [{"content"'),
    ({"instances": [{"content": "AAAA"}, {"content": "AAAA"}]}, 400, "2 instances"),
    ({"instances": ["AAAA"]}, 400, "not valid JSON"),
    ({"instances": [{"video": "AAAA"}]}, 400, 'missing "content"'),
    ({"instances": [{"content": _b64_video(frames=25, width=16, height=16)}]}, 422, "max_frames"),
]


@pytest.mark.parametrize(
    "body,status,words,enveloped",
    [(*case, env) for case in V1_ERRORS for env in (False, True)]
    # a platform body sent to a model behind the kserve envelope (without it, it is the platform route)
    + [({"content": "AAAA"}, 400, '"instances": [{"content"', True)],
)
def test_v1_errors_keep_status_and_message(handler_ctx, body, status, words, enveloped):
    from ts.torch_handler.request_envelope.kserve import KServeEnvelope

    h, ctx = handler_ctx
    handle = KServeEnvelope(h.handle).handle if enveloped else h.handle
    with pytest.raises(PredictionException) as ei:
        handle([{"body": body}], ctx)
    assert ei.value.error_code == status and words in ei.value.message


def _paired_handler(d, tiny_model, rule):
    """A handler over a checkpoint holding two different tiny models (``model.variants.pair``) and ``rule``."""
    from handler.frvsr_handler import FRVSRHandler
    from model.frvsr import FRVSRConfig
    from model.variants import pair
    from testing.helpers import random_frvsr

    save_checkpoint(d / "clean.pth", tiny_model)
    save_checkpoint(d / "comp.pth", random_frvsr(FRVSRConfig(channels=8, blocks=1, fnet_channels=4, hidden=4), seed=5))
    pair(d / "clean.pth", d / "comp.pth", d / "pair.pth", rule)
    (d / "model-config.yaml").write_text(yaml.safe_dump({"minWorkers": 1, "handler": {"torch_threads": 1}}))
    ctx = MockContext(
        model_pt_file="pair.pth", model_dir=str(d), model_file=None, model_yaml_config_file="model-config.yaml"
    )
    h = FRVSRHandler()
    h.initialize(ctx)
    return h, ctx


@pytest.fixture(scope="module")
def paired_ctx(tmp_path_factory, tiny_model):
    from model.variants import InputRule

    return _paired_handler(tmp_path_factory.mktemp("paired_dir"), tiny_model, InputRule(clean_min_bpp=1.5))


def _variant_used(h, ctx, body: dict) -> tuple[str, bytes]:
    """(the variant the handler logged in its result, the 4x video) for one request, through preprocess,
    inference and postprocess as ``handle`` runs them."""
    jobs = h.preprocess([{"body": body}])
    results = h.inference(jobs)
    ((served, _),) = results
    h.postprocess(results)
    return served.variant, served.result.video


def test_paired_checkpoint_serves_compressed_uploads_with_the_compressed_model(paired_ctx):
    from testing.clips import encode_video, moving_clip

    h, ctx = paired_ctx
    assert h.models.paired
    clip = moving_clip(6, 48, 64, dx=2, dy=0, seed=3, grain=16)  # big enough for bits per pixel to mean much
    lossy = base64.b64encode(encode_video(clip, "mp4_h264", options={"crf": "30", "preset": "ultrafast"})).decode()
    lossless = base64.b64encode(encode_video(clip, "mkv_ffv1_rgb")).decode()
    auto_lossy, v1 = _variant_used(h, ctx, {"content": lossy})
    auto_lossless, _ = _variant_used(h, ctx, {"content": lossless})
    forced, v2 = _variant_used(h, ctx, {"content": lossy, "input_quality": "clean"})
    assert auto_lossy.startswith("compressed (auto: h264, ") and auto_lossy.endswith(" bpp)")
    assert auto_lossless.startswith("clean (auto: ffv1")
    assert forced == "clean (requested)"
    assert v1 != v2  # two different models answered


def test_a_blend_serves_the_rates_its_rule_gives_it(tmp_path, tiny_model):
    from model.variants import InputRule
    from testing.clips import encode_video, moving_clip

    # every lossy stream below 1.5 bpp takes the blend here (from 0.001 bpp up)
    h, ctx = _paired_handler(tmp_path, tiny_model, InputRule(clean_min_bpp=1.5, blends=((0.001, 0.5),)))
    assert sorted(h.models.models) == ["blend50", "clean", "compressed"]
    clip = moving_clip(6, 48, 64, dx=2, dy=0, seed=3, grain=16)
    lossy = base64.b64encode(encode_video(clip, "mp4_h264", options={"crf": "30", "preset": "ultrafast"})).decode()
    auto_lossy, blended = _variant_used(h, ctx, {"content": lossy})
    forced, compressed = _variant_used(h, ctx, {"content": lossy, "input_quality": "compressed"})
    assert auto_lossy.startswith("blend50 (auto: h264, ") and forced == "compressed (requested)"
    assert blended != compressed


def test_a_lower_crf_gives_a_larger_file(handler_ctx):
    from testing.clips import encode_video, moving_clip

    h, ctx = handler_ctx
    clip = base64.b64encode(encode_video(moving_clip(6, 32, 48, grain=8), "mp4_h264")).decode()
    sizes = {}
    for crf in (10, 40):
        (out,) = h.handle([{"body": {"content": clip, "crf": crf}}], ctx)
        sizes[crf] = len(base64.b64decode(out))
    assert sizes[10] > 1.5 * sizes[40]
