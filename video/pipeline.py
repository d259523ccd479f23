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
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from common.ahead import name_os_thread
from model.frvsr import SCALE
from model.inference import DEFAULT_CUT_THRESHOLD, super_resolve
from video.io import VideoReader, VideoWriter
from video.settings import HandlerSettings
from wire.contract import format_timing
from wire.payload import VideoRequest, parse_body

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


@dataclass
class Job:
    """One request after preprocess: an opened clip whose header passed the limits."""

    reader: VideoReader
    out_format: str | None
    open_s: float
    input_quality: str | None = None  # the request's override of the automatic model choice (``model.variants``)
    crf: int | None = None  # the request's output quality (``EncoderSettings.with_crf``); None: the server's

    def settings_for(self, settings: HandlerSettings) -> HandlerSettings:
        """The server's settings with this request's output quality, if it asked for one."""
        return settings if self.crf is None else replace(settings, encoder=settings.encoder.with_crf(self.crf))


def open_job(body: object, settings: HandlerSettings) -> Job:
    """A platform request body (``wire.payload.parse_body``'s input) -> Job; raises VideoRequestError."""
    t = time.perf_counter()
    return open_request(parse_body(body), settings, t)


def open_request(req: VideoRequest, settings: HandlerSettings, t: float | None = None) -> Job:
    """A parsed request -> Job: its container opened and its header checked against the limits."""
    t = time.perf_counter() if t is None else t
    reader = VideoReader(req.video)
    i = reader.info
    try:
        settings.limits.check_header(i.width, i.height, i.seconds, i.frames, i.fps)
    except BaseException:
        reader.close()
        raise
    log.info(
        "request: %d bytes %s/%s %dx%d %.3g fps, %s frames, %s s, %s bpp, audio %s",
        len(req.video),
        i.family,
        i.codec,
        i.width,
        i.height,
        float(i.fps),
        i.frames,
        None if i.seconds is None else round(i.seconds, 3),
        None if i.bits_per_pixel is None else round(i.bits_per_pixel, 3),
        i.audio_codec,
    )
    return Job(reader, req.out_format, time.perf_counter() - t, req.input_quality, req.crf)


class _Stage(threading.Thread):
    """A worker thread that records its exception and raises ``stop`` so the other stages unblock."""

    def __init__(self, name: str, target: Callable[[], None], stop: threading.Event):
        super().__init__(name=name, daemon=True)
        self._target_fn = target
        self._stop_event = stop
        self.error: BaseException | None = None

    def run(self) -> None:
        name_os_thread(self.name)  # before the stage starts codec threads: they inherit it
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


@dataclass
class _Shared:
    """What the three stages share: the queues between them, the audio and timestamps, the stop flag."""

    stop: threading.Event
    lr_q: queue.Queue  # (rgb, pts) low-res frames, decode -> model
    hr_q: queue.Queue  # (rgb, pts) 4x frames, model -> encode
    audio: collections.deque  # packets, appended by decode, popped by encode
    pts: collections.deque  # timestamps of the frames handed to the model, in order
    timings: Timings


def decode_stage(reader: VideoReader, settings: HandlerSettings, shared: _Shared, with_audio: bool) -> None:
    """Decode thread: low-res frames (and audio packets) into the model's queue, then the end marker."""
    frames = reader.frames(settings.limits, on_audio=shared.audio.append if with_audio else None)
    try:
        while not shared.stop.is_set():
            t = time.perf_counter()
            item = next(frames, _END)
            shared.timings.decode += time.perf_counter() - t
            _put(shared.lr_q, item, shared.stop)
            if item is _END:
                return
    finally:
        frames.close()


def encode_stage(writer: VideoWriter, time_base, shared: _Shared) -> None:
    """Encode thread: 4x frames from the model, interleaved with the audio packets by time."""
    tm, audio = shared.timings, shared.audio
    while True:
        item = _get(shared.hr_q, shared.stop)
        if item is _END:
            break
        rgb, pts = item
        t = time.perf_counter()
        now = pts * time_base
        while audio and audio[0].pts is not None and audio[0].pts * audio[0].time_base <= now:
            writer.write_audio(audio.popleft())
        writer.write(rgb, pts)
        tm.encode += time.perf_counter() - t
    if shared.stop.is_set():
        return
    t = time.perf_counter()
    while audio:
        writer.write_audio(audio.popleft())
    tm.encode += time.perf_counter() - t


def model_input(shared: _Shared, decoder: _Stage, in_line: bool = True) -> Iterator[np.ndarray]:
    """The model's low-res frames, as the decoder delivers them; its error, if any, is raised here.
    ``in_line``: read by the model's own thread (not by its flow-ahead thread, ``FRVSR.iterate``), whose waits
    for the decoder are then taken off the model's time."""
    while True:
        t = time.perf_counter()
        item = _get(shared.lr_q, shared.stop)
        if in_line:
            shared.timings.model -= time.perf_counter() - t  # waiting for the decoder is not model time
        if item is _END:
            decoder.join()  # it has finished: its error, if any, is recorded
            if decoder.error is not None:
                raise decoder.error
            return
        rgb, pts = item
        shared.pts.append(pts)
        yield rgb


def model_stage(model, shared: _Shared, decoder: _Stage, encoder: _Stage, settings: HandlerSettings, device) -> None:
    """The calling thread: ``super_resolve`` over the decoded frames, each 4x frame handed to the encoder."""
    tm = shared.timings
    cut = settings.cut_threshold if settings.cut_threshold is not None else DEFAULT_CUT_THRESHOLD
    t = time.perf_counter()
    frames = model_input(shared, decoder, in_line=not settings.flow_ahead)
    for hr in super_resolve(
        model, frames, device=device, cut_threshold=cut, precision=settings.precision, flow_ahead=settings.flow_ahead
    ):
        tm.model += time.perf_counter() - t
        _put(shared.hr_q, (hr, shared.pts.popleft()), shared.stop)
        if encoder.error is not None:
            raise encoder.error
        tm.frames += 1
        t = time.perf_counter()
    _put(shared.hr_q, _END, shared.stop)


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
    writer = VideoWriter(info, family, info.width * SCALE, info.height * SCALE, settings.encoder, reader.audio)
    stop = threading.Event()
    shared = _Shared(
        stop,
        queue.Queue(maxsize=settings.queue_frames),
        queue.Queue(maxsize=settings.queue_frames),
        collections.deque(),
        collections.deque(),
        Timings(),
    )
    decoder = _Stage("frvsr-decode", lambda: decode_stage(reader, settings, shared, writer.audio is not None), stop)
    encoder = _Stage("frvsr-encode", lambda: encode_stage(writer, info.time_base, shared), stop)
    decoder.start()
    encoder.start()
    try:
        model_stage(model, shared, decoder, encoder, settings, device)
        encoder.join()
        if encoder.error is not None:
            raise encoder.error
        t = time.perf_counter()
        video = writer.finish()
        shared.timings.encode += time.perf_counter() - t
    except BaseException:
        stop.set()  # unblocks both threads; join before touching the writer they may still use
        decoder.join()
        encoder.join()
        writer.close()
        raise
    decoder.join()
    shared.timings.total = time.perf_counter() - t0
    return Result(video, family, info.width * SCALE, info.height * SCALE, shared.timings)
