"""How much work a clip is, from its container's header alone (PyAV; nothing is decoded)."""

from __future__ import annotations

import io

import av

from wire.cost import Clip
from wire.limits import DEMUXERS


def clip_size(video: bytes) -> Clip | None:
    """The clip's frames and pixels per frame as its header states them (frames, else duration x frame
    rate); None when the header does not say or cannot be read: the model server judges the file."""
    try:
        with av.open(io.BytesIO(video), mode="r", options={"format_whitelist": DEMUXERS}) as c:
            v = c.streams.video[0]
            cc = v.codec_context
            if cc is None:  # a header cut off before the stream's parameters
                return None
            w, h = cc.width, cc.height
            frames = v.frames
            if not frames:
                rate = v.average_rate or v.guessed_rate
                seconds = float(v.duration * v.time_base) if v.duration and v.time_base else None
                if seconds is None and c.duration:
                    seconds = c.duration / av.time_base
                frames = round(seconds * float(rate)) if seconds and rate else 0
            return Clip(frames, w * h) if frames and w and h else None
    except Exception:  # noqa: BLE001 - only an estimate: whatever the header holds, the model server judges the file
        return None
