"""The .mar builder: names, model-config.yaml, archive contents (no server)."""

from __future__ import annotations

import json
import zipfile

import pytest
import yaml

import serving.archive as archive
from model.checkpoint import save_checkpoint
from model.frvsr import FRVSR, FRVSRConfig
from serving.archive import build_mar, mar_file_name, model_name_from, write_model_config
from video.settings import HandlerSettings
from wire.limits import Limits


@pytest.mark.parametrize(
    "used,name",
    [
        ("FRVSR_GAN_default.pth", "FRVSR_GAN_default"),
        ("runs/models/x/FRVSR_GAN_my trial.pth", "FRVSR_GAN_my_trial"),
        ("_x.pt", "x"),
        ("model.v2.pth", "model_v2"),
    ],
)
def test_model_name_from_used_model(used, name):
    assert model_name_from(used) == name


def test_mar_file_names_per_version():
    assert mar_file_name("m", "1.0") == "m.mar" and mar_file_name("m", "2.0") == "m_v2.0.mar"


def test_build_mar_packs_handler_model_checkpoint_and_config(tmp_path):
    ckpt = tmp_path / "tiny.pth"
    save_checkpoint(ckpt, FRVSR(FRVSRConfig(channels=8, blocks=1, fnet_channels=4)))
    settings = HandlerSettings(limits=Limits(max_frames=42))
    cfg = write_model_config(tmp_path / "work" / "model-config.yaml", settings, workers=2, response_timeout=321)
    mar = build_mar(ckpt, "tiny", tmp_path / "store", cfg, tmp_path / "work", version="2.0")
    assert mar == tmp_path / "store" / "tiny_v2.0.mar"
    with zipfile.ZipFile(mar) as z:
        names = set(z.namelist())
        manifest = json.loads(z.read("MAR-INF/MANIFEST.json"))
        packed_cfg = yaml.safe_load(z.read("model-config.yaml"))
    assert {"frvsr_handler.py", "tiny.pth", "video/pipeline.py", "video/io.py", "model/frvsr.py"} <= names
    assert {str(p) for pkg in archive.PACKAGES for p in archive.package_sources(pkg)} <= names
    assert not any(n.startswith("model/pretrained") or n.endswith((".pyc", ".yaml.tmp")) for n in names)
    assert manifest["model"]["modelName"] == "tiny" and manifest["model"]["modelVersion"] == "2.0"
    assert manifest["model"]["serializedFile"] == "tiny.pth" and manifest["model"]["handler"] == "frvsr_handler.py"
    assert packed_cfg["minWorkers"] == packed_cfg["maxWorkers"] == 2 and packed_cfg["responseTimeout"] == 321
    assert HandlerSettings.from_dict(packed_cfg["handler"]).limits.max_frames == 42
    assert not list((tmp_path / "store").glob("*.tmp"))


def test_build_mar_packs_the_model_package_tree_with_sub_packages(tmp_path, monkeypatch):
    """A model package with a sub-package (a second architecture, say) goes into the .mar whole, as .py
    files only: no checkpoint, card or cache besides the serialized checkpoint."""
    root = archive.stage_sources(tmp_path / "root")  # this project's sources as a root to extend
    for rel, text in {
        "model/archs/__init__.py": "",
        "model/archs/second.py": "NAME = 'second'\n",
        "model/archs/deeper/__init__.py": "",
        "model/archs/deeper/blocks.py": "DEPTH = 2\n",
        "model/archs/weights.pth": "not a model file",
        "model/archs/deeper/NOTES.md": "notes",
        "model/archs/__pycache__/second.cpython-311.pyc": "bytecode",
        "model/pretrained/other.pth": "another checkpoint",
    }.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    monkeypatch.setattr(archive, "ROOT", root)
    ckpt = tmp_path / "tiny.pth"
    save_checkpoint(ckpt, FRVSR(FRVSRConfig(channels=8, blocks=1, fnet_channels=4)))
    cfg = write_model_config(tmp_path / "work" / "model-config.yaml", HandlerSettings(), 1, response_timeout=120)
    mar = build_mar(ckpt, "tiny", tmp_path / "store", cfg, tmp_path / "work")
    with zipfile.ZipFile(mar) as z:
        names = set(z.namelist())
        assert z.read("model/archs/deeper/blocks.py") == b"DEPTH = 2\n"
    sub = {"model/archs/__init__.py", "model/archs/second.py", "model/archs/deeper/__init__.py"}
    assert sub | {"model/archs/deeper/blocks.py"} <= names
    assert {"model/frvsr.py", "model/__init__.py", "video/pipeline.py", "wire/contract.py", "common/files.py"} <= names
    assert [n for n in names if n.endswith((".pth", ".md", ".pyc"))] == ["tiny.pth"]


def test_build_mar_missing_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        build_mar(tmp_path / "nope.pth", "x", tmp_path, tmp_path / "c.yaml", tmp_path)
