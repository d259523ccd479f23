"""Synthetic test clips: the one moving-texture generator, and real video files made from it.

Used by the tests and the bench (``testing.clips``); the files are written by the product's own encoder
(``video.io.encode_frames``).
"""

from __future__ import annotations

import io
from fractions import Fraction

import av
import cv2
import numpy as np

from video.io import add_video_stream, decode_frames, encode_frames

__all__ = ["KINDS", "audio_only", "decode_frames", "encode_video", "make_video", "moving_clip", "probe"]

# (muxer, codec, pixel format) per name used in the tests
KINDS = {
    "avi_mjpeg": ("avi", "mjpeg", "yuvj420p"),
    "avi_raw": ("avi", "rawvideo", "bgr24"),
    "avi_mpeg4": ("avi", "mpeg4", "yuv420p"),
    "mp4_h264": ("mp4", "libx264", "yuv420p"),
    "mov_mpeg4": ("mov", "mpeg4", "yuv420p"),
    "mkv_ffv1": ("matroska", "ffv1", "yuv420p"),
    "mkv_ffv1_rgb": ("matroska", "ffv1", "bgr0"),  # lossless RGB: the decoded frames equal the input
    "webm_vp9": ("webm", "libvpx-vp9", "yuv420p"),
}
AUDIO_RATE = 48000


def moving_clip(
    t: int = 7, h: int = 64, w: int = 96, dx: int = 2, dy: int = 1, seed: int = 0, grain: int = 4
) -> np.ndarray:
    """uint8 (t, h, w, 3): a smooth random texture (features ~``grain`` px) translating by (dx, dy) px per frame.

    It compresses like real footage and gives optical flow something to follow.
    """
    rng = np.random.default_rng(seed)
    big_h, big_w = h + abs(dy) * t + 8, w + abs(dx) * t + 8
    base = rng.random((big_h // grain + 1, big_w // grain + 1, 3))
    tex = cv2.resize(base, (big_w, big_h), interpolation=cv2.INTER_CUBIC)
    tex = (np.clip(tex, 0, 1) * 255).astype(np.uint8)
    frames = []
    for i in range(t):
        y0 = 4 + (dy * i if dy >= 0 else abs(dy) * (t - i))
        x0 = 4 + (dx * i if dx >= 0 else abs(dx) * (t - i))
        frames.append(tex[y0 : y0 + h, x0 : x0 + w])
    return np.stack(frames) if frames else np.zeros((0, h, w, 3), np.uint8)


def encode_video(
    clip: np.ndarray,
    kind: str = "avi_mjpeg",
    fps: int = 15,
    audio: bool = False,
    *,
    muxer: str | None = None,
    codec: str | None = None,
    pix_fmt: str | None = None,
    options: dict[str, str] | None = None,
) -> bytes:
    """``clip`` (uint8 (t, h, w, 3) RGB, or (t, h, w) gray) as a real video file in memory.

    ``kind`` names a (muxer, codec, pixel format) of ``KINDS``; ``muxer``, ``codec`` and ``pix_fmt`` override
    its parts (any combination PyAV can write). ``t = 0`` writes the stream header and no frame. ``options``
    go to the encoder (default for libx264: the ultrafast preset). ``audio`` adds a mono 440 Hz tone as long as
    the video: PCM in AVI, Opus in WebM, AAC elsewhere.
    """
    k_muxer, k_codec, k_pix_fmt = KINDS[kind]
    muxer, codec, pix_fmt = muxer or k_muxer, codec or k_codec, pix_fmt or k_pix_fmt
    if options is None:
        options = {"preset": "ultrafast"} if codec == "libx264" else {}

    def tone(c: av.container.OutputContainer):
        audio_codec = "pcm_s16le" if muxer == "avi" else ("libopus" if muxer == "webm" else "aac")
        a = c.add_stream(audio_codec, rate=AUDIO_RATE)
        a.layout = "mono"
        return lambda: _write_tone(c, a, len(clip) / fps)

    extra = tone if audio else None
    if len(clip) == 0:  # the stream header and no frame
        return _header_only(muxer, codec, pix_fmt, fps, clip.shape[1:3], options, extra)
    return encode_frames(clip, muxer, codec, pix_fmt, fps, options, extra=extra)


def _header_only(muxer: str, codec: str, pix_fmt: str, fps: int, size: tuple[int, int], options, extra) -> bytes:
    buf = io.BytesIO()
    with av.open(buf, "w", format=muxer) as c:
        add_video_stream(c, codec, size[1], size[0], pix_fmt, fps, options=options)
        finish = extra(c) if extra is not None else None
        c.start_encoding()
        if finish is not None:
            finish()
    return buf.getvalue()


def make_video(
    kind: str = "avi_mjpeg", frames: int = 12, width: int = 48, height: int = 32, fps: int = 15, audio: bool = False
) -> bytes:
    """``moving_clip`` of ``frames`` frames of ``width`` x ``height`` encoded as ``kind`` (see ``encode_video``)."""
    return encode_video(moving_clip(frames, height, width), kind, fps, audio)


def audio_only(muxer: str, codec: str, seconds: float = 1.0) -> bytes:
    """A mono 440 Hz tone of ``seconds`` in ``muxer``: a readable container without any video stream."""
    buf = io.BytesIO()
    with av.open(buf, "w", format=muxer) as c:
        a = c.add_stream(codec, rate=AUDIO_RATE)
        a.layout = "mono"
        _write_tone(c, a, seconds)
    return buf.getvalue()


def _write_tone(c: av.container.OutputContainer, stream: av.AudioStream, seconds: float) -> None:
    """Encode and mux a 440 Hz tone into ``stream`` in the encoder's sample format, then flush it."""
    n = 960
    fmt = stream.codec_context.format.name
    t = 0
    while t < seconds * AUDIO_RATE:
        x = 0.2 * np.sin(2 * np.pi * 440 * (np.arange(n) + t) / AUDIO_RATE)
        if fmt.startswith("s16"):
            data = (x * 32767).astype(np.int16)
        elif fmt.startswith("s32"):
            data = (x * 2147483647).astype(np.int32)
        else:
            data = x.astype(np.float32)
        frame = av.AudioFrame.from_ndarray(data[None], format=fmt, layout="mono")
        frame.sample_rate, frame.pts, frame.time_base = AUDIO_RATE, t, Fraction(1, AUDIO_RATE)
        c.mux(stream.encode(frame))
        t += n
    c.mux(stream.encode(None))


def probe(data: bytes) -> dict:
    """Decode a video fully: container, codecs, size, fps, frame count, pts (video time base), audio packets."""
    with av.open(io.BytesIO(data)) as c:
        v = c.streams.video[0]
        info = {
            "format": c.format.name,
            "codec": v.codec_context.name,
            "width": v.codec_context.width,
            "height": v.codec_context.height,
            "fps": v.average_rate,
            "time_base": v.time_base,
            "audio": [s.codec_context.name for s in c.streams.audio],
        }
        streams = [v] + list(c.streams.audio[:1])
        pts, audio_packets = [], 0
        for packet in c.demux(streams):
            if packet.stream.type == "audio":
                audio_packets += packet.size > 0
                continue
            pts += [f.pts for f in packet.decode()]
    info.update(frames=len(pts), pts=pts, audio_packets=audio_packets)
    return info
