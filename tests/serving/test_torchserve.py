"""TorchServe plumbing without starting TorchServe: run config, ports, leftover process groups."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import psutil
import pytest

from serving.service import StartupError, check_device, check_java, resolve_checkpoint
from serving.torchserve import (
    Ports,
    ServeError,
    ServeState,
    check_ports,
    free_port,
    group_alive,
    read_properties,
    run_overrides,
    stop_group,
    stop_leftovers,
    write_properties,
)
from testing.helpers import ROOT
from wire.contract import request_limit_bytes, response_limit_bytes
from wire.limits import Limits


def test_committed_config_properties():
    props = read_properties(ROOT / "config.properties")
    assert props["inference_address"] == "http://127.0.0.1:8085"
    assert props["management_address"] == "http://127.0.0.1:8081"
    assert props["metrics_address"] == "http://127.0.0.1:8082" and props["metrics_mode"] == "prometheus"
    assert props["model_store"] == "model_store" and props["enable_model_api"] == "true"
    assert props["disable_token_authorization"] == "false"
    assert props["default_workers_per_model"] == "1"
    assert int(props["max_request_size"]) >= request_limit_bytes(Limits())
    assert int(props["max_response_size"]) >= response_limit_bytes(Limits())
    assert "model_store" in props["allowed_urls"] and "http" not in props["allowed_urls"]


def test_run_copy_keeps_comments_and_overrides_keys(tmp_path):
    ports = Ports(1, 2, 3, 4, 5, 6)
    dest = write_properties(
        ROOT / "config.properties", tmp_path / "config.properties", run_overrides(ports, tmp_path / "store", 100, 200)
    )
    text = dest.read_text()
    props = read_properties(dest)
    assert "# TorchServe configuration" in text
    assert props["inference_address"] == "http://127.0.0.1:2" and props["grpc_management_port"] == "6"
    assert props["model_store"] == str((tmp_path / "store").resolve())
    assert props["max_request_size"] == "100" and props["max_response_size"] == "200"
    # a Java regex quoting the absolute store path, backslashes doubled for the properties format
    assert props["allowed_urls"] == "file://\\\\Q" + str((tmp_path / "store").resolve()) + "/\\\\E[^/]+[.]mar"
    assert sum(line.startswith("inference_address=") for line in text.splitlines()) == 1
    assert "set by client_infer.py" not in text  # every key it sets is already in the committed file


def test_check_ports_names_the_holder(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(ServeError, match=rf"port {port} \(management\) is in use by pid {os.getpid()}"):
            check_ports(Ports(free_port(), free_port(), port, free_port()), tmp_path)
    check_ports(Ports(free_port(), free_port(), free_port(), free_port()), tmp_path)


def test_leftover_group_of_a_dead_owner_is_stopped(tmp_path):
    """A process group whose recorded owner is gone is stopped; one whose owner lives is left alone."""
    fake_ts = "import time; time.sleep(120)  # org.pytorch.serve.ModelServer"
    groups = {}
    for name, owner in (("dead", None), ("alive", psutil.Process())):
        proc = subprocess.Popen([sys.executable, "-c", fake_ts], start_new_session=True)
        run = tmp_path / name
        run.mkdir()
        if owner is None:  # a pid that existed and is gone
            gone = subprocess.Popen([sys.executable, "-c", "pass"])
            gone.wait()
            owner_pid, started = gone.pid, time.time()
        else:
            owner_pid, started = owner.pid, owner.create_time()
        ServeState(owner_pid, started, proc.pid, {}, str(run)).save()
        groups[name] = proc
    try:
        assert stop_leftovers(tmp_path) == [str(tmp_path / "dead")]
        assert groups["dead"].wait(timeout=30) is not None
        assert group_alive(groups["alive"].pid) and ServeState.load(tmp_path / "dead").ts_pgid is None
    finally:
        for proc in groups.values():
            stop_group(proc.pid, grace_s=5)
    assert not group_alive(groups["alive"].pid)


def test_missing_java_and_checkpoint_messages(monkeypatch, tmp_path):
    import serving.service as svc

    monkeypatch.setattr(svc, "java_version", lambda: None)
    with pytest.raises(StartupError, match="apt-get install -y openjdk-17-jre-headless"):
        check_java()
    monkeypatch.setattr(svc, "java_version", lambda: 11)
    with pytest.raises(StartupError, match="found Java 11"):
        check_java()
    with pytest.raises(StartupError, match=r"not found: .*FRVSR_GAN_default.pth.*--model_path and --used_model"):
        resolve_checkpoint(str(tmp_path), "FRVSR_GAN_default.pth")


def test_device_errors_say_what_to_use():
    import torch

    with pytest.raises(StartupError, match="must be cpu, cuda or cuda:N, got 'gpu'"):
        check_device("gpu")
    check_device("cpu")
    if not torch.cuda.is_available():
        with pytest.raises(StartupError, match="no CUDA GPU.*use --device cpu"):
            check_device("cuda:0")
