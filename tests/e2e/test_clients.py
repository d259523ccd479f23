"""End to end: client_train.py then client_test.py as subprocesses, the files they write, bad input,
and a 2-process torchrun training."""

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from openpyxl import load_workbook

from testing.helpers import ROOT, TRIAL_KEYS, client_test_argv, client_train_argv

TINY = (
    "{'advance_settings': {'channels': 8, 'blocks': 1, 'fnet_channels': 4, 'hidden': 4, 'crop_size': 32, "
    "'num_frames': 3, 'epochs': 2, 'crops_per_clip': 2, 'batch_size': 2, 'max_minutes': 2, 'lr_min': 2e-6}}"
)
EVAL_KEYS = {"MSE", "SSIMs", "PSNR", "SSIM"}


def run(args, runs_dir, cwd=None, timeout=300):
    env = {**os.environ, "FRVSR_RUNS_DIR": str(runs_dir), "PYTHONUNBUFFERED": "1"}
    return subprocess.run(
        [sys.executable, *args], cwd=cwd or ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )


@pytest.mark.slow
def test_train_then_test_end_to_end(seed_dataset, tmp_path):
    runs = tmp_path / "runs"
    r = run(
        [
            *client_train_argv(seed_dataset, "e2e", TINY),
        ],
        runs,
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    trial = json.loads((runs / "metric" / "trial.txt").read_text())
    assert set(trial) == TRIAL_KEYS
    assert trial["recom_model"] == trial["used_models"] == "FRVSR_GAN"
    assert trial["gened_model_name"] == "FRVSR_GAN_e2e" and trial["metric_type"] == "PSNR"
    ev = trial["eval_result"]["FRVSR_GAN"]["eval"]
    assert set(ev) == EVAL_KEYS and trial["metric_value"] == ev["PSNR"] and 5 < ev["PSNR"] < 60
    assert ev["SSIM"] == pytest.approx(ev["SSIMs"] / 1, abs=1e-3)  # 4 samples, val_split 0.2 -> 1 held out
    assert trial["predict_prob"] == {}
    assert set(trial["train_consuming"]) == {"total", "train_time", "valid_time"}
    assert trial["train_consuming"]["total"] >= trial["train_consuming"]["train_time"] > 0
    assert trial["model_params"]["channels"] == 8 and trial["model_params"]["epochs"] == 2
    for v in (ev["PSNR"], ev["SSIM"], trial["train_consuming"]["total"]):
        assert round(v, 4) == v
    model_dir = Path(trial["model_path"])
    assert model_dir.is_absolute() and model_dir.parent == runs / "models"
    assert {"FRVSR_GAN_e2e.pth", "settings.json", "train.log", "training_curves.png", "history.json"} <= {
        p.name for p in model_dir.iterdir()
    }
    assert not [p for p in runs.rglob("*") if ".tmp" in p.name]
    settings = json.loads((model_dir / "settings.json").read_text())
    assert settings["lr_min"] == trial["model_params"]["lr_min"] == 2e-6  # settings are not rounded like metrics

    r = run(
        [
            *client_test_argv(seed_dataset, model_dir, "FRVSR_GAN_e2e.pth"),
        ],
        runs,
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    test = json.loads((runs / "metric" / "trial.txt").read_text())
    assert set(test) == {
        "model_path",
        "predict_result_filename",
        "preview_data",
        "test_result",
        "predict_prob",
        "test_consuming",
    }
    assert set(test["test_result"]) == {"FRVSR_GAN", "Bicubic"}
    assert all(
        set(v) == {"test", "test_h264_crf23"} for v in test["test_result"].values()
    )  # clean + the default CRF 23
    assert all(set(c) == EVAL_KEYS for v in test["test_result"].values() for c in v.values())
    for v in test["test_result"].values():  # MSE on the 8-bit scale: PSNR = 10 log10(255^2 / MSE)
        assert v["test"]["PSNR"] == pytest.approx(10 * math.log10(255**2 / v["test"]["MSE"]), abs=2e-4)
        assert v["test_h264_crf23"]["PSNR"] < v["test"]["PSNR"]  # the compressed input is harder
    assert test["preview_data"] == {} and test["predict_prob"] == {} and test["test_consuming"]["test"] > 0
    out_dir = Path(test["model_path"])
    assert out_dir.parent == runs / "models" and out_dir != model_dir
    assert test["predict_result_filename"].startswith("evaluation_") and test["predict_result_filename"].endswith(
        ".xlsx"
    )

    wb = load_workbook(out_dir / test["predict_result_filename"])
    rows = list(wb["per_sample"].values)
    assert rows[0][:6] == ("sample", "frames", "size", "MSE", "PSNR", "SSIM")
    assert sorted(r[0] for r in rows[1:]) == [f"sample_{i}" for i in range(4)]  # no sep_testlist: every sample
    assert all(r[1] == 7 and r[2] == "64x64" for r in rows[1:])
    assert len(wb["per_sample"]._charts) == 1
    crf = {r[0]: r for r in wb["h264_crf23"].values if r and r[0] in ("FRVSR_GAN", "Bicubic")}
    assert crf["FRVSR_GAN"][2] == pytest.approx(test["test_result"]["FRVSR_GAN"]["test_h264_crf23"]["PSNR"], abs=1e-3)
    summary = {r[0]: r for r in wb["summary"].values if r and r[0] in ("FRVSR_GAN", "Bicubic")}
    assert summary["Bicubic"][2] == pytest.approx(test["test_result"]["Bicubic"]["test"]["PSNR"], abs=1e-3)
    assert summary["FRVSR_GAN"][2] == pytest.approx(test["test_result"]["FRVSR_GAN"]["test"]["PSNR"], abs=1e-3)


def test_runs_dir_is_under_the_project_root_not_the_cwd(monkeypatch, tmp_path):
    from train.results import runs_dir

    monkeypatch.delenv("FRVSR_RUNS_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    assert runs_dir() == ROOT / "runs"


@pytest.mark.slow
@pytest.mark.parametrize(
    "args,message",
    [
        (["--dataset_path", "/does/not/exist"], "does not exist"),
        (["--dataset_path", "{data}", "--annotation_data", "{'advance_settings': {'bogus': 1}}"], "valid keys"),
        (["--dataset_path", "{data}", "--annotation_data", "not a dict"], "annotation_data"),
        (["--dataset_path", "{data}", "--device", "cuda"], "sees no CUDA GPU"),
    ],
)
def test_train_bad_input_exits_with_a_clear_message(args, message, seed_dataset, tmp_path):
    if "cuda" in args:
        import torch

        if torch.cuda.is_available():
            pytest.skip("this machine has CUDA")
    args = [a.replace("{data}", str(seed_dataset)) for a in args]
    r = run([str(ROOT / "client_train.py"), *args], tmp_path / "runs")
    assert r.returncode == 2 and message in r.stderr, r.stderr[-2000:]
    assert not (tmp_path / "runs" / "metric" / "trial.txt").exists()


@pytest.mark.slow
def test_test_with_missing_or_broken_model_names_the_path(seed_dataset, tmp_path):
    (tmp_path / "broken.pth").write_bytes(b"\0" * 10)
    for name in ("missing.pth", "broken.pth"):
        args = ["--dataset_path", str(seed_dataset), "--model_path", str(tmp_path), "--used_model", name]
        r = run([str(ROOT / "client_test.py"), *args], tmp_path / "runs")
        assert r.returncode == 2 and name in r.stderr


@pytest.mark.slow
def test_torchrun_two_processes(seed_dataset, tmp_path):
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    runs = tmp_path / "runs"
    env = {**os.environ, "FRVSR_RUNS_DIR": str(runs)}
    r = subprocess.run(
        [
            torchrun,
            "--standalone",
            "--nproc_per_node=2",
            *client_train_argv(seed_dataset, "ddp", TINY),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    trial = json.loads((runs / "metric" / "trial.txt").read_text())
    settings = json.loads((Path(trial["model_path"]) / "settings.json").read_text())
    assert settings["world_size"] == 2
    assert len(list((runs / "models").iterdir())) == 1  # only rank 0 wrote
    assert (Path(trial["model_path"]) / "FRVSR_GAN_ddp.pth").is_file()


@pytest.mark.slow
def test_sigkill_mid_run_leaves_no_partial_result(seed_dataset, tmp_path):
    """A run killed with SIGKILL leaves nothing a later run or the platform could take for a result:
    trial.txt is absent or a complete JSON document, every .pth present loads; a rerun succeeds."""
    import signal
    import time

    from model.checkpoint import load_checkpoint

    runs = tmp_path / "runs"
    env = {**os.environ, "FRVSR_RUNS_DIR": str(runs)}
    long_run = TINY.replace("'epochs': 2", "'epochs': 1000")
    p = subprocess.Popen(
        [
            sys.executable,
            *client_train_argv(seed_dataset, "k", long_run),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not list(runs.glob("models/*/FRVSR_GAN_k.pth")):
        time.sleep(0.2)
    p.send_signal(signal.SIGKILL)
    p.wait()
    trial = runs / "metric" / "trial.txt"
    if trial.exists():
        json.loads(trial.read_text())
    for ckpt in runs.glob("models/*/*.pth"):
        load_checkpoint(ckpt)
    r = run(
        [
            *client_train_argv(seed_dataset, "k", TINY),
        ],
        runs,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads(trial.read_text())["gened_model_name"] == "FRVSR_GAN_k"
