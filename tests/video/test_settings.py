"""video/settings.py and wire/limits.py: the limits and their messages, handler settings from model-config.yaml."""

from __future__ import annotations

import pytest
import yaml

from testing.helpers import ROOT
from video.settings import HandlerSettings
from wire.errors import LimitExceeded
from wire.limits import Limits


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
    assert HandlerSettings.from_dict({"precision": "int8", "flow_ahead": 0}).flow_ahead == 0
    with pytest.raises(ValueError, match="precision must be one of.*'int8'.*got 'int4'"):
        HandlerSettings.from_dict({"precision": "int4"})
    with pytest.raises(ValueError, match="x264_preset must be one of.*'ultrafast'.*got 'warp9'"):
        HandlerSettings.from_dict({"x264_preset": "warp9"})  # at start-up, not at the first request's encoder


def test_model_config_template_is_valid():
    cfg = yaml.safe_load((ROOT / "handler" / "model-config.yaml").read_text())
    assert "handler" not in cfg  # not restated: client_infer.py writes it from HandlerSettings (test_archive)
    assert cfg["batchSize"] == 1 and cfg["responseTimeout"] > 0


def test_a_requests_crf_maps_onto_each_encoder():
    from video.settings import EncoderSettings

    e = EncoderSettings().with_crf(30)
    assert (e.x264_crf, e.x264_crf_full_chroma, e.vp9_crf) == (30, 24, 37)
    assert EncoderSettings().with_crf(3).x264_crf_full_chroma == 0 and EncoderSettings().with_crf(51).vp9_crf == 63
