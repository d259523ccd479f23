"""The served pipeline's per-frame budget (issue 29): core-ms a frame for decode, flow, warp + input assembly, SRNet,
output and encode, the rest, and the cores' idle time, at 176x144 and 200x200, so a change shows where it landed.

    OMP_WAIT_POLICY=PASSIVE python -m bench.budget                          # the shipped default, 150-frame clips
    OMP_WAIT_POLICY=PASSIVE python -m bench.budget --frames 20 --sizes 176x144
    OMP_WAIT_POLICY=PASSIVE python -m bench.budget --arms before=x264_preset:superfast now=x264_preset:ultrafast

A moving synthetic clip (``testing.clips.moving_clip``), uploaded as H.264 at 30 fps, is served the way a worker
serves it: ``handler.upscaler.Upscaler`` (the checkpoint through ``load_for_serving``, int8 where the CPU allows,
warmed up, the worker's torch threads) with the handler's settings (flow ahead, the encoder), that is
``video.pipeline.upscale_video``'s decode, model and encode threads. The served code holds no timing code for this:
the bench wraps parts of its own model object (``instrument``) and reads the kernel's per-thread CPU clocks. One
short clip of the same size goes first, unmeasured (first-use costs at a new size: oneDNN's primitives, x264).

Core-ms is CPU time summed over the threads that did the work, a thread's helpers included: the pipeline names its
threads in the OS (``common.ahead.name_os_thread``) before they start any, and the threads they start (the intra-op
OpenMP workers, FFmpeg's and x264's threads) inherit the name. The model runs in the calling thread; its group is the
threads named like it when the clip starts (it and its OpenMP workers). Per frame, the rows count:

- decode: the decode thread and its codec threads, the whole clip: demux, H.264 decode, to RGB, the hand-off;
- flow: the flow thread (``flow_ahead``) and its OpenMP workers: frames to tensors, padding, the scene-cut test,
  SPyNet (with the flow in line: SPyNet's calls in the model thread);
- warp + input assembly: the model thread's group inside ``FRVSR.reconstruct`` less SRNet: the warps of the 4x
  estimate and of the state, ``space_to_depth``, the bicubic residual, the concatenation;
- SRNet: inside ``srnet`` (the int8 program where served int8);
- output: from a frame's yield by ``iterate`` until the model asks for the next one: to uint8, the hand-off to the
  encoder;
- encode: the encode thread and x264's threads: RGB to YUV, x264, mux. x264's threads exit with the encoder, before
  their clocks can be read, so this row is the process's CPU time less every other busy row (anything else the
  process did lands here; the bench runs nothing else);
- other: the rest of the model thread's group: polling for the flow, the recurrence's glue, the encoder's flush;
- idle: cores x wall - the process's CPU time: core time the pipeline left unused (the recurrence waiting on itself,
  and on a busy box the other processes' time);
- total: cores x wall; the busy rows and idle add up to it.

Wall ms: the calls of each piece on the clock, summed (decode and encode: the pipeline's own ``Timings``, which
overlap the model); total: the clip's wall time. Linux only (``/proc/self/task``).

Saves ``bench/results/budget.{json,md}``; ``make bench`` runs it (into ``bench.md``). ``--arms`` compares models and
handler settings in interleaved rounds in one process (``bench/results/budget_arms.{json,md}``): this VM's speed
drifts between runs by more than most cuts save, so a cut is measured beside what it replaces.
"""

from __future__ import annotations

import argparse
import ast
import logging
import os
import statistics
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import torch
import torch.nn as nn

from bench.saved import save_result
from common.paths import DEFAULT_MODEL, ROOT
from handler.upscaler import Upscaler
from model.runtime import available_cores
from testing.clips import encode_video, moving_clip
from video.io import VideoReader
from video.pipeline import Job
from video.settings import HandlerSettings

log = logging.getLogger(__name__)
SIZES = ((176, 144), (200, 200))  # the two clips of the speed targets
CLIP_FRAMES = 150  # 5 s at 30 fps
BUSY = ("decode", "flow", "warp + input assembly", "SRNet", "output", "encode", "other")
ROWS = (*BUSY, "idle", "total")
_TASKS = Path("/proc/self/task")


# ----------------------------------------------------------------------------- per-thread CPU clocks


def cpu_ns(tid: int) -> int | None:
    """CPU time (ns) of this process's thread ``tid`` (a kernel thread id), None once it has exited. The clock id is
    the kernel's per-thread CPU clock, ``((~tid) << 3) | 6``: what glibc's ``pthread_getcpuclockid`` returns."""
    try:
        return time.clock_gettime_ns((~tid << 3) | 6)
    except OSError:
        return None


def thread_names() -> dict[int, str]:
    """{kernel thread id: OS name} of this process's live threads."""
    out = {}
    for entry in os.listdir(_TASKS):
        try:
            out[int(entry)] = (_TASKS / entry / "comm").read_text().strip()
        except OSError:  # exited meanwhile
            continue
    return out


class ThreadClocks:
    """This process's threads' CPU time since the object was made: ``used_ns(tids)``; a stage's threads are the
    ones named like it (``named_like_me``)."""

    def __init__(self):
        self.start = {tid: cpu_ns(tid) or 0 for tid in thread_names()}

    def used_ns(self, tids) -> int:
        """CPU ns of the live threads among ``tids`` since the start (a thread born since: all of its time)."""
        return sum(now - self.start.get(t, 0) for t in tids if (now := cpu_ns(t)) is not None)

    def named_like_me(self) -> list[int]:
        """The live threads named like the calling thread: it and the helpers it started."""
        names = thread_names()
        mine = names.get(threading.get_native_id())
        return [t for t, n in names.items() if n == mine]


# ----------------------------------------------------------------------------- instrumenting a model


class _Clip:
    """What one clip's run tallies: core and wall ns per piece, the thread groups read as they end."""

    def __init__(self):
        self.clocks = ThreadClocks()
        self.model_tid = threading.get_native_id()
        self.model_group = self.clocks.named_like_me()  # the model thread and its OpenMP workers, from the warm-up
        self.core: dict[str, int] = defaultdict(int)
        self.wall: dict[str, int] = defaultdict(int)
        self.groups: dict[str, int] = {}  # row -> CPU ns of a thread group read when its stage ended

    def model_cpu(self) -> int | None:
        """The model thread group's CPU ns now, or None when called from another thread."""
        if threading.get_native_id() != self.model_tid:
            return None
        return sum(c for t in self.model_group if (c := cpu_ns(t)) is not None)

    def add(self, row: str, core0: int | None, wall0: int) -> None:
        self.wall[row] += time.perf_counter_ns() - wall0
        if core0 is not None:
            self.core[row] += self.model_cpu() - core0

    def end_of_stage(self, row: str) -> None:
        """Called by a stage's last code in its own thread: its group's CPU, before the thread and its helpers exit."""
        if threading.get_native_id() != self.model_tid:
            self.groups[row] = self.clocks.used_ns(self.clocks.named_like_me())


class _Timed(nn.Module):
    """A module in another's place that tallies its calls as ``row``."""

    def __init__(self, inner: nn.Module, row: str, clip: Callable[[], _Clip]):
        super().__init__()
        self.inner, self.row, self.clip = inner, row, clip

    def forward(self, *args, **kwargs):
        clip = self.clip()
        core0, wall0 = clip.model_cpu(), time.perf_counter_ns()
        out = self.inner(*args, **kwargs)
        clip.add(self.row, core0, wall0)
        return out


def instrument(model: nn.Module, clip: Callable[[], _Clip]) -> None:
    """Wrap ``model``'s (an FRVSR's) flow, SRNet, ``reconstruct``, ``flows`` and ``iterate`` so that each call is
    tallied in ``clip()`` (the run in progress). In place: the bench's own model object, never a served one."""
    flows, reconstruct, iterate = model.flows, model.reconstruct, model.iterate
    model.fnet = _Timed(model.fnet, "flow", clip)
    model.srnet = _Timed(model.srnet, "SRNet", clip)

    def timed_flows(*args, **kwargs) -> Iterator:
        try:
            yield from flows(*args, **kwargs)
        finally:  # in the flow thread when the flow runs ahead
            clip().end_of_stage("flow")

    def timed_reconstruct(*args, **kwargs):
        c = clip()
        core0, wall0 = c.model_cpu(), time.perf_counter_ns()
        out = reconstruct(*args, **kwargs)
        c.add("reconstruct", core0, wall0)
        return out

    def timed_iterate(*args, **kwargs) -> Iterator:
        for item in iterate(*args, **kwargs):
            c = clip()
            core0, wall0 = c.model_cpu(), time.perf_counter_ns()
            yield item
            c.add("output", core0, wall0)

    model.flows, model.reconstruct, model.iterate = timed_flows, timed_reconstruct, timed_iterate


class _Reader(VideoReader):
    """The upload's reader, whose frames end by reading the decode thread group's CPU."""

    clip: _Clip | None = None

    def frames(self, *args, **kwargs):
        try:
            yield from super().frames(*args, **kwargs)
        finally:  # in the decode thread, before it and its codec threads exit
            if self.clip is not None:
                self.clip.end_of_stage("decode")


# ----------------------------------------------------------------------------- the budget


class Budget:
    """An ``Upscaler``'s models, instrumented once, and clips measured through ``Upscaler.serve``."""

    def __init__(self, upscaler: Upscaler):
        self.upscaler = upscaler
        self._clip: _Clip | None = None
        for model in upscaler.models.models.values():
            instrument(model, lambda: self._clip)

    def measure(self, video: bytes) -> dict:
        """One upload served; its rows (``ROWS``), each ``{"core_ms", "wall_ms"}`` per frame, and what ran."""
        reader = _Reader(video)
        try:
            # the windows nest: the clock's around the process's around every thread's, so no row comes out negative
            t0, cpu0 = time.perf_counter_ns(), time.process_time_ns()
            self._clip = clip = reader.clip = _Clip()
            served = self.upscaler.serve(Job(reader, None, 0.0))
            model_group = clip.clocks.used_ns(clip.model_group)
            cpu, wall = time.process_time_ns() - cpu0, time.perf_counter_ns() - t0
        finally:
            reader.close()
            self._clip = None
        tm, cores = served.result.timings, available_cores()
        core, w = clip.core, clip.wall
        flow_ahead = "flow" in clip.groups
        ns = {
            "decode": (clip.groups.get("decode", 0), tm.decode * 1e9),
            "flow": (clip.groups["flow"] if flow_ahead else core["flow"], w["flow"]),
            "warp + input assembly": (core["reconstruct"] - core["SRNet"], w["reconstruct"] - w["SRNet"]),
            "SRNet": (core["SRNet"], w["SRNet"]),
            "output": (core["output"], w["output"]),
            "other": (model_group - core["reconstruct"] - core["output"] - (0 if flow_ahead else core["flow"]), None),
        }
        ns["encode"] = (cpu - sum(c for c, _ in ns.values()), tm.encode * 1e9)
        ns["idle"] = (cores * wall - cpu, None)
        ns["total"] = (cores * wall, wall)
        n = tm.frames
        per_frame = lambda v: None if v is None else v / n / 1e6  # noqa: E731
        return {
            "frames": n,
            "width": reader.info.width,
            "height": reader.info.height,
            "cores": cores,
            "torch_threads": torch.get_num_threads(),
            "precision": self.upscaler.precision,
            "flow_ahead": self.upscaler.settings.flow_ahead,
            "x264_preset": self.upscaler.settings.encoder.x264_preset,
            "variant": served.variant,
            "wall_s": wall / 1e9,
            "busy_core_ms": per_frame(cpu),
            "rows": {r: {"core_ms": per_frame(ns[r][0]), "wall_ms": per_frame(ns[r][1])} for r in ROWS},
        }


def upload(width: int, height: int, frames: int, seed: int = 0) -> bytes:
    """A moving synthetic clip as an H.264 MP4 upload at 30 fps."""
    return encode_video(moving_clip(frames, height, width, seed=seed), "mp4_h264", fps=30)


def run(
    model: Path = DEFAULT_MODEL,
    sizes: tuple[tuple[int, int], ...] = SIZES,
    frames: int = CLIP_FRAMES,
    settings: HandlerSettings | None = None,
    warm_frames: int = 3,
) -> dict:
    """The budget of ``model`` served with ``settings`` (default: the handler's) at each (width, height)."""
    if not _TASKS.is_dir():
        raise RuntimeError(f"bench.budget reads per-thread CPU clocks from {_TASKS} (Linux); not found")
    settings = settings or HandlerSettings()
    upscaler = Upscaler(model, settings, torch.device("cpu"), 1, Path(model).stem)
    budget = Budget(upscaler)
    res: dict = {"model": str(model), "machine": _machine(), "sizes": {}}
    for w, h in sizes:
        budget.measure(upload(w, h, warm_frames, seed=1))  # first use at this size, unmeasured
        res["sizes"][f"{w}x{h}"] = row = budget.measure(upload(w, h, frames))
        log.info("budget %dx%d: %s", w, h, {r: round(v["core_ms"], 1) for r, v in row["rows"].items()})
    return res


def parse_arm(text: str) -> tuple[str, Path, dict]:
    """``NAME=key:value,key:value`` -> (name, model, handler settings): ``model:PATH`` picks the checkpoint (default:
    the shipped default); every other key is a ``HandlerSettings`` key (``x264_preset:ultrafast``, ``flow_ahead:0``)."""
    name, _, spec = text.partition("=")
    if not name or not spec:
        raise argparse.ArgumentTypeError(f"an arm is NAME=key:value[,key:value...], got {text!r}")
    model, given = DEFAULT_MODEL, {}
    for item in spec.split(","):
        key, _, value = item.partition(":")
        if key == "model":
            model = Path(value)
        else:
            try:
                given[key] = ast.literal_eval(value)  # numbers, None, True
            except (ValueError, SyntaxError):
                given[key] = value  # a word: a preset, a precision
    try:
        HandlerSettings.from_dict(given)  # a wrong key fails here, before any warm-up
    except ValueError as e:  # argparse would print only "invalid parse_arm value"
        raise argparse.ArgumentTypeError(f"arm {name!r}: {e}") from e
    return name, model, given


def compare(
    arms: list[tuple[str, Path, dict]], sizes: Sequence[tuple[int, int]], frames: int = CLIP_FRAMES, rounds: int = 2
) -> dict:
    """The budget of several arms (model and settings) served in interleaved rounds in one process, the order
    reversed every other round, so that this VM's drift (the same kernel 45-185 ms from one call to the next) lands
    on every arm alike: per arm and size, the clip's wall seconds in each round and the rows' core-ms a frame, the
    median over the rounds. Each arm's torch threads are set before each of its clips (a process-wide setting)."""
    names = [name for name, _, _ in arms]
    if len(set(names)) != len(names):
        raise ValueError(f"arm names must differ, got {names}")
    budgets, threads = {}, {}
    for name, model, given in arms:
        budgets[name] = Budget(Upscaler(model, HandlerSettings.from_dict(given), torch.device("cpu"), 1, name))
        threads[name] = torch.get_num_threads()  # what its Upscaler set
    res: dict = {"machine": _machine(), "frames": frames, "rounds": rounds, "arms": {}}

    def measure(name: str, video: bytes) -> dict:
        torch.set_num_threads(threads[name])
        return budgets[name].measure(video)

    for w, h in sizes:
        for name in names:
            measure(name, upload(w, h, 3, seed=1))  # first use at this size, unmeasured
        runs = defaultdict(list)
        for r in range(rounds):
            for name in names if r % 2 == 0 else names[::-1]:
                runs[name].append(row := measure(name, upload(w, h, frames)))
                log.info("round %d %s %dx%d: %.2f s, %d threads", r + 1, name, w, h, row["wall_s"], threads[name])
        for name, (_, model, given) in zip(budgets, arms, strict=True):
            rows = runs[name]
            arm = res["arms"].setdefault(name, {"model": str(model), "settings": given, "sizes": {}})
            arm["torch_threads"] = rows[0]["torch_threads"]  # as measured: the threads its clips ran with
            arm["sizes"][f"{w}x{h}"] = {
                "wall_s": [r["wall_s"] for r in rows],
                "variant": rows[0]["variant"],
                "core_ms": {k: statistics.median(r["rows"][k]["core_ms"] for r in rows) for k in ROWS},
            }
    return res


def compare_markdown(res: dict) -> str:
    """``compare``'s result as two tables: each arm's wall seconds and core-ms at each size, then every row."""
    names = list(res["arms"])
    sizes = list(next(iter(res["arms"].values()))["sizes"])
    out = [
        f"Machine: {res['machine']}. Each arm served {res['frames']}-frame clips in {res['rounds']} interleaved rounds "
        "(`python -m bench.budget --arms ...`, the order reversed every other round); core-ms a frame, the median over "
        "the rounds; wall: each round's.",
        "",
        "| arm | settings | " + " | ".join(f"{s} wall s | {s} total / busy core-ms" for s in sizes) + " |",
        "|---|---|" + "---:|---:|" * len(sizes),
    ]
    for name in names:
        arm = res["arms"][name]
        cells = []
        for s in sizes:
            a = arm["sizes"][s]
            busy = a["core_ms"]["total"] - a["core_ms"]["idle"]
            cells += [" / ".join(f"{t:.2f}" for t in a["wall_s"]), f"{a['core_ms']['total']:.1f} / {busy:.1f}"]
        given = ", ".join(f"{k} {v}" for k, v in arm["settings"].items()) or "the handler's defaults"
        model = "" if arm["model"] == str(DEFAULT_MODEL) else f"`{Path(arm['model']).name}`, "
        out.append(f"| {name} | {model}{given} | " + " | ".join(cells) + " |")
    out += ["", "| core-ms a frame | " + " | ".join(f"{n} {s}" for s in sizes for n in names) + " |"]
    out.append("|---|" + "---:|" * (len(sizes) * len(names)))
    for r in ROWS:
        cells = [f"{res['arms'][n]['sizes'][s]['core_ms'][r]:.1f}" for s in sizes for n in names]
        out.append(f"| {r} | " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


def _machine() -> str:
    import platform

    from model.quantize import int8_unavailable

    cpu = platform.processor() or platform.machine()
    return f"{cpu}, {available_cores()} cores; int8: {int8_unavailable() or 'available'}"


def markdown(res: dict, title: str = "") -> str:
    sizes = res["sizes"]
    first = next(iter(sizes.values()))
    out = [title, ""] if title else []
    out += [
        f"Machine: {res['machine']}. Model: `{res['model']}`, precision {first['precision']}, flow "
        f"{first['flow_ahead']} frames ahead, x264 {first['x264_preset']}, {first['torch_threads']} torch threads, "
        f"{first['cores']} cores. A moving synthetic clip uploaded as H.264, served as a worker serves it "
        "(`python -m bench.budget`; what each row counts: its docstring, and docs/results.md).",
        "",
        "| per frame | " + " | ".join(f"{s} core-ms | wall ms" for s in sizes) + " |",
        "|---|" + "---:|---:|" * len(sizes),
    ]
    for r in ROWS:
        cells = []
        for s in sizes.values():
            v = s["rows"][r]
            cells += [f"{v['core_ms']:.1f}", "-" if v["wall_ms"] is None else f"{v['wall_ms']:.1f}"]
        out.append(f"| {'**' + r + '**' if r == 'total' else r} | " + " | ".join(cells) + " |")
    out.append(
        "\n"
        + "; ".join(
            f"{name}: {s['frames']} frames in {s['wall_s']:.2f} s ({s['variant']}), busy {s['busy_core_ms']:.1f} "
            "core-ms a frame"
            for name, s in sizes.items()
        )
    )
    return "\n".join(out) + "\n"


def _size(text: str) -> tuple[int, int]:
    w, _, h = text.partition("x")
    return int(w), int(h)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.budget", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    p.add_argument("--sizes", nargs="+", type=_size, default=list(SIZES), help="WIDTHxHEIGHT of the low-res clips")
    p.add_argument("--frames", type=int, default=CLIP_FRAMES)
    p.add_argument("--out", type=Path, default=None, help="default bench/results/budget (with --arms: budget_arms)")
    p.add_argument(
        "--arms", nargs="+", type=parse_arm, default=None,
        help="compare NAME=key:value,... arms in interleaved rounds (model:PATH, any handler setting)",
    )  # fmt: skip
    p.add_argument("--rounds", type=int, default=2, help="with --arms: rounds of each arm")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if os.environ.get("OMP_WAIT_POLICY", "").upper() != "PASSIVE":
        log.warning("OMP_WAIT_POLICY is not PASSIVE: the workers run with it (use make bench, or set it)")
    results = ROOT / "bench" / "results"
    if a.arms:
        res = compare(a.arms, a.sizes, a.frames, a.rounds)
        save_result(a.out or results / "budget_arms", res, compare_markdown(res))
    else:
        res = run(a.model, a.sizes, a.frames)
        save_result(a.out or results / "budget", res, markdown(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
