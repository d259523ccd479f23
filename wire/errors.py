"""Client-fault errors raised while reading a request; each carries the HTTP status it maps to.

The handler turns them into TorchServe's ``PredictionException`` with that status; anything else is a
server fault (5xx). TorchServe rewrites 413 to 507, so oversized inputs use 400/422, never 413.
"""

from __future__ import annotations


class VideoRequestError(Exception):
    """The request cannot be served as sent; ``str(e)`` says what is wrong and what to do."""

    status = 400


class BadRequest(VideoRequestError):
    """Malformed request: not JSON, missing or non-string ``content``, invalid base64, bad option."""

    status = 400


class UnsupportedMedia(VideoRequestError):
    """The bytes are not a container FFmpeg can read (text, an image, random data)."""

    status = 415


class Unprocessable(VideoRequestError):
    """A readable file that cannot be super-resolved: no video stream, corrupt frames, over a limit."""

    status = 422


class LimitExceeded(Unprocessable):
    """The video is over one of the configured limits (frame area, duration, frame count, output size)."""
