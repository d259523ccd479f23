"""In-memory video I/O with PyAV: open and decode any clip FFmpeg reads, encode the 4x result.

Nothing touches the disk. ``VideoReader`` reads the header on construction (so limits are checked before
decoding) and then yields uint8 RGB frames with their timestamps; ``VideoWriter`` encodes frames with
those timestamps into the same container family (AVI -> AVI, MP4/MOV -> MP4, MKV -> MKV, WebM -> WebM)
and copies the audio packets through untouched. ``encode_frames`` / ``decode_frames`` write and read a
whole clip at once (the training degradations' H.264 round trip, the test and bench clips). Every
encoder is set up by one function, ``add_video_stream``.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction

import av
import numpy as np

from video.settings import EncoderSettings
from wire.errors import Unprocessable, UnsupportedMedia
from wire.limits import DEMUXERS, Limits

log = logging.getLogger(__name__)


# output family -> (FFmpeg muxer, video encoder)
MUXERS = {"avi": "avi", "mp4": "mp4", "mkv": "matroska", "webm": "webm"}
VIDEO_ENCODER = {"avi": "libx264", "mp4": "libx264", "mkv": "libx264", "webm": "libvpx-vp9"}


@dataclass(frozen=True)
class VideoInfo:
    """What the header says about the clip; ``frames``/``seconds`` are None when it does not say."""

    family: str  # avi / mp4 / mkv / webm: the default output container
    container: str  # FFmpeg demuxer name, e.g. 'mov,mp4,m4a,3gp,3g2,mj2'
    codec: str
    width: int
    height: int
    fps: Fraction
    time_base: Fraction
    frames: int | None
    seconds: float | None
    audio_codec: str | None
    pix_fmt: str | None = None  # the decoder's pixel format, e.g. 'yuv420p', 'bgr0'
    bit_rate: int | None = None  # of the video stream, bits/s: the stream's, else the file's (less audio)

    @property
    def bits_per_pixel(self) -> float | None:
        """Bits per pixel of the video stream (``bit_rate`` / pixels per second): how hard it was compressed."""
        if not self.bit_rate or not self.fps:
            return None
        return self.bit_rate / (self.width * self.height * float(self.fps))


def add_video_stream(
    container: av.container.OutputContainer,
    codec: str,
    width: int,
    height: int,
    pix_fmt: str,
    rate: Fraction | int,
    time_base: Fraction | None = None,
    options: dict[str, str] | None = None,
    threads: int = 0,
) -> av.VideoStream:
    """The one encoder set-up: a ``codec`` stream of ``width`` x ``height`` ``pix_fmt`` at ``rate`` fps in
    ``container``, frames timed in ``time_base`` (default: the codec's 1/rate), ``threads`` encoder threads
    (0: the codec decides; 1 for reproducible output)."""
    stream = container.add_stream(codec, rate=rate)
    stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
    if time_base is not None:  # else PyAV's: the codec's 1/rate, the muxer's own
        stream.codec_context.time_base = time_base
        stream.time_base = time_base
    stream.thread_count = threads
    stream.options = {
        **(options or {}),
        **({"threads": str(threads)} if threads and codec.startswith("libx264") else {}),
    }
    return stream


def encode_frames(
    frames,
    muxer: str = "mp4",
    codec: str = "libx264",
    pix_fmt: str = "yuv420p",
    rate: int = 25,
    options: dict[str, str] | None = None,
    threads: int = 0,
    extra: Callable[[av.container.OutputContainer], Callable[[], None]] | None = None,
) -> bytes:
    """A whole clip of uint8 (h, w, 3) RGB (or (h, w) gray) frames, numbered 0, 1, ..., as a video file in
    memory. ``extra(container)`` may add more streams before the first frame and returns what writes them
    after the video is flushed (the test clips' audio)."""
    frames = list(frames)
    if not frames:
        raise ValueError("encode_frames needs at least one frame to know the size; got none")
    h, w = frames[0].shape[:2]
    src_format = "gray" if frames[0].ndim == 2 else "rgb24"
    buf = io.BytesIO()
    with av.open(buf, "w", format=muxer) as c:
        stream = add_video_stream(c, codec, w, h, pix_fmt, rate, options=options, threads=threads)
        finish_extra = extra(c) if extra is not None else None
        for i, f in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format=src_format)
            frame.pts = i  # in the codec's time base, 1/rate
            c.mux(stream.encode(frame))
        c.mux(stream.encode(None))
        if finish_extra is not None:
            finish_extra()
    return buf.getvalue()


def decode_frames(data: bytes, threads: int = 0) -> list[np.ndarray]:
    """Every frame of the first video stream of an in-memory file as uint8 (h, w, 3) RGB, in display order."""
    with av.open(io.BytesIO(data)) as c:
        if threads:
            c.streams.video[0].codec_context.thread_count = threads
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


def full_chroma(pix_fmt: str | None) -> bool:
    """Whether ``pix_fmt`` keeps colour at full resolution (RGB, 4:4:4), i.e. is not subsampled like 4:2:0."""
    if not pix_fmt:
        return False
    try:
        f = av.VideoFormat(pix_fmt)
    except (ValueError, av.FFmpegError):
        return False
    return len(f.components) >= 3 and f.chroma_width(64) == 64 and f.chroma_height(64) == 64


def container_family(format_name: str, head: bytes) -> str:
    """Map an FFmpeg demuxer name to an output family; anything unusual (FLV, TS, OGG...) becomes MP4."""
    names = set(format_name.split(","))
    if "avi" in names:
        return "avi"
    if "matroska" in names:
        return "webm" if b"webm" in head[:64] else "mkv"  # the EBML DocType sits in the first bytes
    if "ivf" in names:  # VP8/VP9 elementary stream: WebM is its natural container
        return "webm"
    return "mp4"


class VideoReader:
    """An opened in-memory clip. Read ``info``, then iterate ``frames()`` once; ``close()`` when done."""

    def __init__(self, data: bytes):
        self._head = data[:64]
        self._size = len(data)
        try:
            self.container = av.open(io.BytesIO(data), mode="r", options={"format_whitelist": DEMUXERS})
        except (av.FFmpegError, ValueError, OSError) as e:
            raise UnsupportedMedia(
                f"content is not a video FFmpeg can read ({_short(e)}); send AVI, MP4, MOV, MKV or WebM "
                "(H.264, MPEG-4, MJPEG, VP9, FFV1, raw...) encoded as base64"
            ) from None
        try:
            if not self.container.streams.video:
                kinds = sorted({s.type for s in self.container.streams}) or ["none"]
                raise Unprocessable(f"the file has no video stream (streams: {', '.join(kinds)}); send a video")
            self.video = self.container.streams.video[0]
            audio = self.container.streams.audio
            self.audio = audio[0] if audio else None
            self.info = self._read_info()
        except BaseException:
            self.container.close()
            raise

    def _read_info(self) -> VideoInfo:
        v = self.video
        cc = v.codec_context
        if cc is None or not cc.width or not cc.height:  # no codec context: the stream header is cut off
            name = cc.name if cc is not None else "unknown"
            raise Unprocessable(f"cannot read the frame size of the {name} video stream; the file may be truncated")
        fps = v.average_rate or v.guessed_rate or v.base_rate
        fps = Fraction(fps) if fps and fps > 0 else Fraction(25)
        tb = Fraction(v.time_base) if v.time_base else 1 / fps
        if v.duration:
            seconds = float(v.duration * tb)
        elif self.container.duration:
            seconds = self.container.duration / av.time_base
        else:
            seconds = None
        return VideoInfo(
            family=container_family(self.container.format.name, self._head),
            container=self.container.format.name,
            codec=cc.name,
            width=cc.width,
            height=cc.height,
            fps=fps,
            time_base=tb,
            frames=v.frames or None,
            seconds=seconds,
            audio_codec=self.audio.codec_context.name if self.audio is not None else None,
            pix_fmt=cc.pix_fmt,
            bit_rate=self._video_bit_rate(seconds),
        )

    def _video_bit_rate(self, seconds: float | None) -> int | None:
        """The stream's bit rate where the demuxer knows it (MP4, MOV, AVI), else the file's over its
        duration (MKV, WebM), less the audio stream's."""
        if self.video.bit_rate:
            return int(self.video.bit_rate)
        total = self.container.bit_rate or (self._size * 8 / seconds if seconds else 0)
        audio = (self.audio.bit_rate or 0) if self.audio is not None else 0
        return int(total - audio) if total > audio else None

    def frames(
        self, limits: Limits, on_audio: Callable[[av.Packet], None] | None = None
    ) -> Iterator[tuple[np.ndarray, int]]:
        """Yield ``(rgb uint8 (h, w, 3), pts in info.time_base)`` in display order, enforcing ``limits``.

        Audio packets met while demuxing go to ``on_audio`` (copied later by the writer). Timestamps that
        are missing or not increasing are repaired so the encoder always gets a strictly increasing clock.
        """
        info = self.info
        step = max(1, round(1 / (info.fps * info.time_base)))  # one frame in time_base ticks
        streams = [self.video] + ([self.audio] if self.audio is not None and on_audio else [])
        first = last = None
        n = 0
        try:
            for packet in self.container.demux(streams):
                if packet.stream.type == "audio":
                    if packet.dts is not None and packet.size:
                        on_audio(packet)
                    continue
                for frame in packet.decode():
                    pts = frame.pts if frame.pts is not None else (last + step if last is not None else 0)
                    if last is not None and pts <= last:
                        pts = last + 1
                    first = pts if first is None else first
                    last = pts
                    n += 1
                    limits.check_frames(n)
                    limits.check_seconds(float((pts - first) * info.time_base) + 1 / float(info.fps), info.fps)
                    if (frame.width, frame.height) != (info.width, info.height):
                        raise Unprocessable(
                            f"frame {n - 1} is {frame.width}x{frame.height} but the clip starts at "
                            f"{info.width}x{info.height}; the model needs one frame size per clip"
                        )
                    yield frame.to_ndarray(format="rgb24"), pts
        except av.FFmpegError as e:
            raise Unprocessable(f"the video is corrupt: decoding failed after {n} frames ({_short(e)})") from None
        if n == 0:
            raise Unprocessable("the video stream has no decodable frames")

    def close(self) -> None:
        self.container.close()


class VideoWriter:
    """Encode 4x RGB frames into an in-memory container of ``family``; audio packets are copied as-is."""

    def __init__(
        self,
        info: VideoInfo,
        family: str,
        width: int,
        height: int,
        settings: EncoderSettings,
        audio: av.audio.AudioStream | None = None,
    ):
        self.family = family
        self.in_tb = info.time_base
        self.buf = io.BytesIO()
        # no "+faststart": it re-reads the finished file by name, which a BytesIO does not have
        self.container = av.open(self.buf, mode="w", format=MUXERS[family])
        try:
            self.stream = self._add_video(info, width, height, settings)
            self.audio = self._add_audio(audio) if audio is not None else None
        except BaseException:
            self.container.close()
            raise
        self._last_pts = None
        self.frames = 0

    def _add_video(self, info: VideoInfo, width: int, height: int, s: EncoderSettings):
        codec = VIDEO_ENCODER[self.family]
        keep = s.keep_full_chroma and full_chroma(info.pix_fmt)  # the sender's colour detail is not thrown away
        source_rgb = keep and av.VideoFormat(info.pix_fmt).is_rgb
        rgb = codec == "libx264" and (s.x264_rgb or source_rgb)
        if codec == "libx264":
            options = {"crf": str(s.x264_crf_full_chroma if keep else s.x264_crf), "preset": s.x264_preset}
            if s.x264_tune:
                options["tune"] = s.x264_tune
            if self.family == "avi":
                options["bf"] = "0"  # B-frames in AVI trip up many players
        else:
            options = {"crf": str(s.vp9_crf), "b": "0", "deadline": "realtime", "cpu-used": str(s.vp9_cpu_used)}
            options["row-mt"] = "1"
        # AVI is constant frame rate: its clock ticks once per frame. The others keep the input's clock.
        self.out_tb = 1 / info.fps if self.family == "avi" else info.time_base
        pix_fmt = "rgb24" if rgb else ("yuv444p" if keep else "yuv420p")
        return add_video_stream(
            self.container,
            "libx264rgb" if rgb else codec,
            width,
            height,
            pix_fmt,
            info.fps,
            self.out_tb,
            options,
            s.threads,
        )

    def _add_audio(self, audio: av.audio.AudioStream):
        try:
            out = self.container.add_stream_from_template(audio)
        except (av.FFmpegError, ValueError) as e:
            raise Unprocessable(self._audio_hint(audio, e)) from None
        return out

    def _audio_hint(self, audio, e: Exception) -> str:
        return (
            f"the audio track ({audio.codec_context.name}) cannot be copied into {self.family.upper()} ({_short(e)}); "
            'omit "format" to keep the input container, or ask for "mkv", which takes any audio'
        )

    def write(self, rgb: np.ndarray, pts: int) -> None:
        """Encode one frame; ``pts`` is in the input's time base (rescaled for AVI's frame clock)."""
        if self.out_tb != self.in_tb:
            pts = round(pts * self.in_tb / self.out_tb)
        if self._last_pts is not None and pts <= self._last_pts:
            pts = self._last_pts + 1
        self._last_pts = pts
        frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
        frame.pts = pts
        frame.time_base = self.out_tb
        self._mux(self.stream.encode(frame))
        self.frames += 1

    def write_audio(self, packet: av.Packet) -> None:
        if self.audio is None:
            return
        packet.stream = self.audio
        self._mux([packet])

    def _mux(self, packets) -> None:
        try:
            self.container.mux(packets)
        except (av.FFmpegError, ValueError) as e:
            if packets and packets[0].stream is self.audio:
                raise Unprocessable(self._audio_hint(self.audio, e)) from None
            raise

    def finish(self) -> bytes:
        """Flush the encoder, write the trailer, return the file's bytes."""
        self._mux(self.stream.encode(None))
        self.container.close()
        return self.buf.getvalue()

    def close(self) -> None:
        """Release without finishing (on errors)."""
        try:
            self.container.close()
        except Exception:  # a half-written container may fail to close; nothing to keep
            log.debug("closing an unfinished output failed", exc_info=True)


def _short(e: Exception) -> str:
    return str(e).replace("'<none>'", "").strip(" :")[:200]
