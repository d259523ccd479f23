"""Stream one clip through decode -> FRVSR -> encode, with the three stages overlapping.

A decode thread fills a bounded queue of low-res frames, the calling thread runs the model through
``model.inference.super_resolve`` (the one inference path), and an encode thread drains a bounded queue of
4x frames. At most ``queue_frames`` frames wait between stages, so memory stays flat whatever the clip
length and the 4x clip is never held as float tensors. Audio packets are copied through, interleaved
with the video by time.
"""

from __future__ import annotations

import collections
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from model.frvsr import SCALE
from model.inference import super_resolve
from serving.contract import format_timing

from .payload import parse_body
from .settings import HandlerSettings
from .video import VideoReader, VideoWriter

log = logging.getLogger(__name__)

_END = object()  # end-of-stream marker on the queues
_POLL_S = 0.1  # how often a blocked stage checks whether another one failed


@dataclass
class Timings:
    """Seconds spent in each stage (they overlap, so the parts can add up to more than ``total``)."""

    open: float = 0.0  # reading the container header
    decode: float = 0.0  # demux + decode + convert to RGB
    model: float = 0.0  # super_resolve, excluding time waiting for decoded frames
    encode: float = 0.0  # RGB -> YUV, encode, mux (audio included)
    total: float = 0.0  # wall time of the whole clip
    frames: int = 0

    def header(self) -> str:
        """The ``X-FRVSR-Timing`` text (``open=0.001;decode=0.120;...;frames=150``), also logged."""
        return format_timing(self.__dict__)


@dataclass
class Result:
    video: bytes
    family: str
    width: int
    height: int
    timings: Timings = field(default_factory=Timings)
    protocol: str = "platform"  # how the request came, so the answer goes back the same way (frvsr_handler)


@dataclass
class Job:
    """One request after preprocess: an opened clip whose header passed the limits."""

    reader: VideoReader
    out_format: str | None
    open_s: float
    protocol: str = "platform"  # how the request came (frvsr_handler: PLATFORM, V1 or V1_INSTANCE)


def open_job(row: dict, settings: HandlerSettings) -> Job:
    """TorchServe request row (``{"body": ...}`` or ``{"data": ...}``) -> Job; raises VideoRequestError."""
    t = time.perf_counter()
    body = row.get("data") if row.get("data") is not None else row.get("body")
    req = parse_body(body)
    reader = VideoReader(req.video)
    i = reader.info
    try:
        settings.limits.check_header(i.width, i.height, i.seconds, i.frames, i.fps)
    except BaseException:
        reader.close()
        raise
    log.info(
        "request: %d bytes %s/%s %dx%d %.3g fps, %s frames, %s s, audio %s",
        len(req.video),
        i.family,
        i.codec,
        i.width,
        i.height,
        float(i.fps),
        i.frames,
        None if i.seconds is None else round(i.seconds, 3),
        i.audio_codec,
    )
    return Job(reader, req.out_format, time.perf_counter() - t)


class _Stage(threading.Thread):
    """A worker thread that records its exception and raises ``stop`` so the other stages unblock."""

    def __init__(self, name: str, target: Callable[[], None], stop: threading.Event):
        super().__init__(name=name, daemon=True)
        self._target_fn = target
        self._stop_event = stop
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self._target_fn()
        except BaseException as e:  # handed to the calling thread, which re-raises it
            self.error = e
            self._stop_event.set()


def _put(q: queue.Queue, item: Any, stop: threading.Event) -> None:
    """Blocking put that gives up once another stage has failed (so no thread is left hanging)."""
    while not stop.is_set():
        try:
            q.put(item, timeout=_POLL_S)
            return
        except queue.Full:
            continue


def _get(q: queue.Queue, stop: threading.Event) -> Any:
    while True:
        try:
            return q.get(timeout=_POLL_S)
        except queue.Empty:
            if stop.is_set():
                return _END


def upscale_video(
    model, reader: VideoReader, settings: HandlerSettings, out_family: str | None = None, device=None
) -> Result:
    """Super-resolve the clip behind ``reader`` (whose header was already checked) into a 4x video.

    Raises whatever a stage raised: ``VideoRequestError`` subclasses for the client's faults
    (corrupt frames, a limit hit while decoding, audio that does not fit the container), others for ours.
    """
    t0 = time.perf_counter()
    info = reader.info
    family = out_family or info.family
    tm = Timings()
    writer = VideoWriter(info, family, info.width * SCALE, info.height * SCALE, settings.encoder, reader.audio)
    stop = threading.Event()
    lr_q: queue.Queue = queue.Queue(maxsize=settings.queue_frames)
    hr_q: queue.Queue = queue.Queue(maxsize=settings.queue_frames)
    audio: collections.deque = collections.deque()  # packets, appended by decode, popped by encode
    pts_q: collections.deque = collections.deque()  # timestamps of frames handed to the model, in order

    def decode() -> None:
        frames = reader.frames(settings.limits, on_audio=audio.append if writer.audio is not None else None)
        try:
            while not stop.is_set():
                t = time.perf_counter()
                item = next(frames, _END)
                tm.decode += time.perf_counter() - t
                _put(lr_q, item, stop)
                if item is _END:
                    return
        finally:
            frames.close()

    def encode() -> None:
        tb = info.time_base
        while True:
            item = _get(hr_q, stop)
            if item is _END:
                break
            rgb, pts = item
            t = time.perf_counter()
            now = pts * tb
            while audio and audio[0].pts is not None and audio[0].pts * audio[0].time_base <= now:
                writer.write_audio(audio.popleft())
            writer.write(rgb, pts)
            tm.encode += time.perf_counter() - t
        if stop.is_set():
            return
        t = time.perf_counter()
        while audio:
            writer.write_audio(audio.popleft())
        tm.encode += time.perf_counter() - t

    def low_res() -> Iterator[np.ndarray]:
        while True:
            t = time.perf_counter()
            item = _get(lr_q, stop)
            tm.model -= time.perf_counter() - t  # waiting for the decoder is not model time
            if item is _END:
                decoder.join()  # it has finished: its error, if any, is recorded
                if decoder.error is not None:
                    raise decoder.error
                return
            rgb, pts = item
            pts_q.append(pts)
            yield rgb

    decoder = _Stage("frvsr-decode", decode, stop)
    encoder = _Stage("frvsr-encode", encode, stop)
    decoder.start()
    encoder.start()
    try:
        t = time.perf_counter()
        for hr in super_resolve(
            model, low_res(), device=device, cut_threshold=_cut(settings), precision=settings.precision
        ):
            tm.model += time.perf_counter() - t
            _put(hr_q, (hr, pts_q.popleft()), stop)
            if encoder.error is not None:
                raise encoder.error
            tm.frames += 1
            t = time.perf_counter()
        _put(hr_q, _END, stop)
        encoder.join()
        if encoder.error is not None:
            raise encoder.error
        t = time.perf_counter()
        video = writer.finish()
        tm.encode += time.perf_counter() - t
    except BaseException:
        stop.set()  # unblocks both threads; join before touching the writer they may still use
        decoder.join()
        encoder.join()
        writer.close()
        raise
    decoder.join()
    tm.total = time.perf_counter() - t0
    return Result(video, family, info.width * SCALE, info.height * SCALE, tm)


def _cut(settings: HandlerSettings) -> Any:
    if settings.cut_threshold is not None:
        return settings.cut_threshold
    from model.inference import DEFAULT_CUT_THRESHOLD

    return DEFAULT_CUT_THRESHOLD
