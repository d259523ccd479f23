"""Where the project's things are: its root, ``runs/``, the shipped default model, the shared data.

Relative to this file, never to the working directory, so the clients, the tests and the bench find the
same files from anywhere.
"""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent  # the repository root
PRETRAINED_DIR = ROOT / "model" / "pretrained"
DEFAULT_MODEL_FILE = "FRVSR_GAN_default.pth"  # the shipped default, served and evaluated when none is given
DEFAULT_MODEL = PRETRAINED_DIR / DEFAULT_MODEL_FILE
GAN_MODEL = PRETRAINED_DIR / "FRVSR_GAN_sharp.pth"  # the adversarial fine-tune, served by --extra_model gan
SHARED_DATA = ROOT.parent / "shared" / "data"  # beside the project, never inside it (never committed)
VIMEO_SAMPLE = SHARED_DATA / "vimeo90k_sample"
VSR_TRAIN = SHARED_DATA / "vsr_train"
# the two test lists every quality table reports, by the names the tables use (each folder's sep_testlist.txt)
TEST_LISTS = {"vsr_train": VSR_TRAIN, "vimeo": VIMEO_SAMPLE}


def runs_dir() -> Path:
    """``runs/`` under the project root; ``FRVSR_RUNS_DIR`` overrides it (tests)."""
    return Path(os.environ.get("FRVSR_RUNS_DIR") or ROOT / "runs").resolve()
