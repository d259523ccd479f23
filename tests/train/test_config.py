"""advance_settings / annotation_data parsing and the CLIs' argument contracts."""

import pytest

from train.config import TrainConfig, parse_annotation_data


def test_annotation_data_python_literal_and_json():
    assert parse_annotation_data("{'advance_settings': {'max_minutes': 3}}") == {"max_minutes": 3}
    assert parse_annotation_data('{"advance_settings": {"gan_x": true}}') == {"gan_x": True}
    assert parse_annotation_data("{'advance_settings':{}}") == {}
    assert parse_annotation_data("{}") == {}


def test_annotation_data_is_never_evaluated():
    with pytest.raises(ValueError, match="neither"):
        parse_annotation_data("__import__('os').system('echo pwned')")
    with pytest.raises(ValueError, match="must be a dict"):
        parse_annotation_data("[1, 2]")


def test_settings_override_and_validate():
    cfg = TrainConfig.from_settings(
        {"max_minutes": 3, "batch_size": 2, "lr": 1e-3, "degradation": "blur", "channels": 16, "blocks": 2, "seed": 5}
    )
    assert (cfg.max_minutes, cfg.batch_size, cfg.degradation, cfg.model.channels) == (3.0, 2, "blur", 16)
    with pytest.raises(ValueError, match="valid keys") as e:
        TrainConfig.from_settings({"learning_rate": 1})
    assert "lr" in str(e.value) and "max_minutes" in str(e.value)
    with pytest.raises(ValueError, match="must be int"):
        TrainConfig.from_settings({"batch_size": "8"})
    with pytest.raises(ValueError, match="degradation"):
        TrainConfig.from_settings({"degradation": "jpeg"})
    with pytest.raises(ValueError, match="crop_size"):
        TrainConfig.from_settings({"crop_size": 100})


def test_client_arguments_are_the_platform_contract():
    import client_infer
    import client_test
    import client_train

    a = client_train.parse_args(["--dataset_path", "d"])
    assert (a.dataset_path, a.device, a.annotation_data) == ("d", "cpu", "{'advance_settings':{}}")
    assert hasattr(a, "trial_name")
    t = client_test.parse_args(["--dataset_path", "d", "--model_path", "m", "--used_model", "x.pth", "--device", "cpu"])
    assert (t.dataset_path, t.model_path, t.used_model, t.device) == ("d", "m", "x.pth", "cpu")
    i = client_infer.parse_args([])
    assert i.device == "cpu" and i.service_port == 8080 and i.used_model and i.model_path
