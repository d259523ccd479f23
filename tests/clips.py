"""Tiny in-memory test videos for the serving tests: any container/codec PyAV can write, optional audio."""

from __future__ import annotations

import io
from fractions import Fraction

import av
import numpy as np

from conftest import moving_clip

# (muxer, codec, pixel format) per name used in the tests
KINDS = {
    "avi_mjpeg": ("avi", "mjpeg", "yuvj420p"),
    "avi_raw": ("avi", "rawvideo", "bgr24"),
    "avi_mpeg4": ("avi", "mpeg4", "yuv420p"),
    "mp4_h264": ("mp4", "libx264", "yuv420p"),
    "mov_mpeg4": ("mov", "mpeg4", "yuv420p"),
    "mkv_ffv1": ("matroska", "ffv1", "yuv420p"),
    "webm_vp9": ("webm", "libvpx-vp9", "yuv420p"),
}


def make_video(kind: str = "avi_mjpeg", frames: int = 12, width: int = 48, height: int = 32, fps: int = 15, audio: bool = False) -> bytes:
    """A smooth moving texture as a real video file; ``audio`` adds a mono AAC (MP4/MOV/MKV) or PCM (AVI) tone."""
    muxer, codec, pix_fmt = KINDS[kind]
    clip = moving_clip(frames, height, width)
    buf = io.BytesIO()
    with av.open(buf, "w", format=muxer) as c:
        v = c.add_stream(codec, rate=fps)
        v.width, v.height, v.pix_fmt = width, height, pix_fmt
        if codec == "libx264":
            v.options = {"preset": "ultrafast"}
        a = None
        if audio:
            a = c.add_stream("pcm_s16le" if muxer == "avi" else ("libopus" if muxer == "webm" else "aac"), rate=48000)
            a.layout = "mono"
        for i, f in enumerate(clip):
            frame = av.VideoFrame.from_ndarray(f, format="rgb24")
            frame.pts = i
            frame.time_base = Fraction(1, fps)
            c.mux(v.encode(frame))
        c.mux(v.encode(None))
        if a is not None:
            _write_tone(c, a, frames / fps)
    return buf.getvalue()


def _write_tone(c, stream, seconds: float) -> None:
    rate, n = 48000, 960
    fmt = stream.codec_context.format.name
    t = 0
    while t < seconds * rate:
        x = 0.2 * np.sin(2 * np.pi * 440 * (np.arange(n) + t) / rate)
        data = (x * 32767).astype(np.int16)[None] if fmt == "s16" else x.astype(np.float32)[None]
        frame = av.AudioFrame.from_ndarray(data, format=fmt, layout="mono")
        frame.sample_rate = rate
        frame.pts = t
        frame.time_base = Fraction(1, rate)
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
