"""The one atomic write: a unique temp file in the destination's folder, flushed to disk, then renamed
over the destination. A process killed at any point leaves the old file or the new one, never half of one."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

_UMASK: list[int] = []  # read on first use: mkstemp makes 0600 files, and a result should get the usual permissions


def _file_mode() -> int:
    if not _UMASK:
        umask = os.umask(0o022)
        os.umask(umask)
        _UMASK.append(umask)
    return 0o666 & ~_UMASK[0]


@contextlib.contextmanager
def atomic_path(path: str | Path, keep_suffix: bool = False) -> Iterator[Path]:
    """Yield a fresh temp path beside ``path``; write it inside the block (``torch.save``, ``savefig``...).

    On a clean exit the temp file is fsynced and renamed to ``path``; on an error it is removed and ``path``
    is untouched. The temp name is hidden and ends in ``.tmp`` (a left-over never matches ``*.pth`` or
    ``*.mar``); ``keep_suffix`` ends it in ``path``'s suffix instead, for writers that choose the format by
    it (matplotlib).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = f".tmp{path.suffix}" if keep_suffix else ".tmp"
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.fchmod(fd, _file_mode())
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; returns ``path``."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; returns ``path``."""
    return atomic_write_bytes(path, text.encode("utf-8"))
