"""common/files.py: the one atomic write."""

from __future__ import annotations

import os

import pytest

from common.files import atomic_path, atomic_write_bytes, atomic_write_text


def test_atomic_write_replaces_whole_files_with_the_usual_permissions(tmp_path):
    target = tmp_path / "sub" / "trial.txt"
    atomic_write_text(target, "old")
    atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"new" and os.listdir(target.parent) == ["trial.txt"]
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask


def test_a_failed_write_leaves_the_old_file_and_no_temp_file(tmp_path):
    target = tmp_path / "model.pth"
    target.write_bytes(b"good")
    with atomic_path(tmp_path / "curves.png", keep_suffix=True) as tmp:
        assert tmp.suffix == ".png" and tmp.name.startswith(".")  # writers that pick the format by suffix
        tmp.write_bytes(b"png")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        assert tmp.parent == tmp_path and tmp.suffix == ".tmp" and not tmp.match("*.pth")
        tmp.write_bytes(b"half")
        raise RuntimeError("killed mid-write")
    assert target.read_bytes() == b"good" and sorted(os.listdir(tmp_path)) == ["curves.png", "model.pth"]
