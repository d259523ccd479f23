"""Where results go and how they are written: always atomically (temp file in the same folder, then rename)."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from train.metrics import json_safe

PROJECT_ROOT = Path(__file__).resolve().parent.parent
MODEL_NAME = "FRVSR_GAN"  # the name the platform knows this model by


def runs_dir() -> Path:
    """``runs/`` under the project root (not the CWD); ``FRVSR_RUNS_DIR`` overrides it (tests)."""
    return Path(os.environ.get("FRVSR_RUNS_DIR") or PROJECT_ROOT / "runs").resolve()


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: str | Path, obj) -> None:
    """Write ``obj`` as JSON (floats rounded to 4 decimals, inf capped; see metrics.json_safe)."""
    atomic_write_bytes(path, (json.dumps(json_safe(obj), indent=2, allow_nan=False) + "\n").encode())


def trial_path() -> Path:
    return runs_dir() / "metric" / "trial.txt"
