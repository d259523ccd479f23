"""Where results go and how they are written: always atomically (``common.files``)."""

from __future__ import annotations

import json
from pathlib import Path

from common.files import atomic_write_bytes
from common.paths import runs_dir
from train.metrics import json_safe

MODEL_NAME = "FRVSR_GAN"  # the name the platform knows this model by


def atomic_write_json(path: str | Path, obj) -> None:
    """Write ``obj`` as JSON (floats rounded to 4 decimals, inf capped; see metrics.json_safe)."""
    atomic_write_bytes(path, (json.dumps(json_safe(obj), indent=2, allow_nan=False) + "\n").encode())


def trial_path() -> Path:
    return runs_dir() / "metric" / "trial.txt"
