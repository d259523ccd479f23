"""The model package's commands, above everything else in ``model/`` (nothing in it imports this module):

    python -m model.commands from-frvsr IN.pth OUT.pth [--flow_scale S]
    python -m model.commands grow IN.pth OUT.pth --set block=rep backward=32 ...
    python -m model.commands pair CLEAN.pth COMPRESSED.pth OUT.pth [--clean_min_bpp X] [--blend MIN_BPP:W ...]
    python -m model.commands rule PAIRED.pth OUT.pth [--clean_min_bpp X] [--blend MIN_BPP:W ...]
    python -m model.commands unpair PAIRED.pth clean|compressed OUT.pth
    python -m model.commands teacher-export DIR [--weights BIx4|BDx4|REDS4]

``from-frvsr``: a trained FRVSR's reconstruction with BasicVSR's released SPyNet as its flow
(``model.frvsr_spynet.from_frvsr``), as a checkpoint to train on with ``init_from``; its training time
(``cpu_seconds``) is carried over. ``grow``: a trained model with more capacity (``FRVSR.grown``: rep blocks, a
backward pass, a wider state) that starts with the same outputs, to train on with ``init_from``; its time carried
over too. ``pair``: one checkpoint holding a clean-input model and its compressed-input fine-tune
(``model.variants.pair``), with the rule that picks between them and their blends. ``rule``: the same file with
another rule (then ``python -m train.calibrate`` it: a new blend needs its int8 program). ``unpair``: one model
of a paired file as a checkpoint of its own (``model.variants.unpair``), to train on with ``init_from``.
``teacher-export``: the teacher, BasicVSR with its authors' released weights, as a project checkpoint
``DIR/basicvsr_<weights>.pth`` (``model.teacher.export``); the path is the last line printed. Each prints
the file it wrote; a bad input exits 2 with a message.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from model.checkpoint import load_checkpoint, save_checkpoint
from model.frvsr import FRVSR
from model.frvsr_spynet import FRVSRSpyNetConfig, from_frvsr
from model.teacher import LICENCE, TRAINING_DATA, WEIGHTS, export
from model.variants import CLEAN, COMPRESSED, InputRule, pair, unpair, with_rule


def convert_from_frvsr(src: Path, dest: Path, flow_scale: float) -> Path:
    """``from-frvsr``: ``src`` (an FRVSR checkpoint) converted to an FRVSR-SPyNet checkpoint at ``dest``."""
    frvsr, ckpt = load_checkpoint(src, channels_last=False)
    if type(frvsr) is not FRVSR:
        raise ValueError(f"{src} holds a {type(frvsr).__name__}, not an FRVSR")
    model = from_frvsr(frvsr, flow_scale)
    save_checkpoint(dest, model, converted_from=str(src), cpu_seconds=float(ckpt.get("cpu_seconds", 0.0)))
    return dest


def grow(src: Path, dest: Path, changes: list[str]) -> Path:
    """``grow``: ``src``'s model (a pair's clean one) grown by ``changes`` (``NAME=VALUE``), written to ``dest``."""
    model, ckpt = load_checkpoint(src, channels_last=False)
    if not isinstance(model, FRVSR):
        raise ValueError(f"{src} holds a {type(model).__name__}, not an FRVSR")
    settings: dict[str, object] = {}
    for change in changes:
        name, sep, value = change.partition("=")
        if not sep:
            raise ValueError(f"--set takes NAME=VALUE, got {change!r}")
        settings[name] = int(value) if value.isdigit() else value
    out = model.grown(**settings)
    carried = {"cpu_seconds": float(ckpt.get("cpu_seconds", 0.0)), "counted_targets": ckpt.get("counted_targets", [])}
    save_checkpoint(dest, out, grown_from=str(src), **carried)
    return dest


BLEND_HELP = "lossy input from MIN_BPP bits per pixel up to clean_min_bpp gets W x clean + (1 - W) x compressed"


def parse_blend(text: str) -> tuple[float, float]:
    """``MIN_BPP:W`` -> (min_bpp, w), for ``--blend``."""
    b, sep, w = text.partition(":")
    try:
        return float(b), float(w)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--blend takes MIN_BPP:W, e.g. 0.6:0.5, got {text!r}") from None


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m model.commands", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    q = sub.add_parser("from-frvsr", help="an FRVSR checkpoint with BasicVSR's released SPyNet as its flow")
    q.add_argument("src", type=Path)
    q.add_argument("dest", type=Path)
    q.add_argument("--flow_scale", type=float, default=FRVSRSpyNetConfig.flow_scale)
    q = sub.add_parser("grow", help="a trained model with more capacity that starts with the same outputs")
    q.add_argument("src", type=Path)
    q.add_argument("dest", type=Path)
    q.add_argument("--set", nargs="+", required=True, metavar="NAME=VALUE", help="block=rep, backward=N, ...")
    q = sub.add_parser("pair", help="write one checkpoint holding a clean model and its compressed fine-tune")
    q.add_argument("clean")
    q.add_argument("compressed")
    q.add_argument("out")
    q.add_argument("--clean_min_bpp", type=float, default=InputRule.clean_min_bpp)
    q.add_argument("--blend", type=parse_blend, nargs="*", default=[], metavar="MIN_BPP:W", help=BLEND_HELP)
    q = sub.add_parser("rule", help="a paired checkpoint with another input rule (its blends)")
    q.add_argument("paired")
    q.add_argument("out")
    q.add_argument("--clean_min_bpp", type=float, default=InputRule.clean_min_bpp)
    q.add_argument("--blend", type=parse_blend, nargs="*", default=[], metavar="MIN_BPP:W", help=BLEND_HELP)
    q = sub.add_parser("unpair", help="one model of a paired checkpoint as a checkpoint of its own")
    q.add_argument("paired")
    q.add_argument("name", choices=[CLEAN, COMPRESSED])
    q.add_argument("out")
    q = sub.add_parser("teacher-export", help="write the teacher as a project checkpoint (arch basicvsr)")
    q.add_argument("dir", type=Path, help="folder to write basicvsr_<weights>.pth into")
    q.add_argument("--weights", choices=sorted(WEIGHTS), default="BIx4", help="which released weights")
    return p


def main(argv: list[str] | None = None) -> int:
    a = parser().parse_args(argv)
    try:
        if a.cmd == "from-frvsr":
            out = convert_from_frvsr(a.src, a.dest, a.flow_scale)
        elif a.cmd == "grow":
            out = grow(a.src, a.dest, a.set)
        elif a.cmd == "pair":
            pair(a.clean, a.compressed, a.out, InputRule(a.clean_min_bpp, tuple(a.blend)))
            out = a.out
        elif a.cmd == "rule":
            with_rule(a.paired, a.out, InputRule(a.clean_min_bpp, tuple(a.blend)))
            out = a.out
        elif a.cmd == "unpair":
            unpair(a.paired, a.name, a.out)
            out = a.out
        else:
            out = export(a.dir, a.weights)
            print(f"{a.weights}: {TRAINING_DATA[a.weights]}; {LICENCE}")
    except (ValueError, FileNotFoundError, ModuleNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
