"""What one request may contain: ``Limits``, the platform's spec (frame area 200x200, 5 s, 300 frames).

They are checked twice: from the container header before any decoding (cheap rejection), and while
decoding (headers can be missing or lie), so a clip over a limit never costs more than the frames up to
the limit. The byte sizes the proxy and TorchServe must accept follow from them (``wire.contract``).
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

from wire.contract import max_video_bytes, request_limit_bytes
from wire.errors import LimitExceeded

RAISE_HINT = "the server operator can raise it with client_infer.py --{flag} (model-config.yaml handler.{key})"


@dataclass(frozen=True)
class Limits:
    """What one request may contain; a video over any of them is rejected with 422."""

    max_pixels: int = 40_000  # frame area width*height: 200x200; the 4x output is 16x that
    max_seconds: float = 5.0  # clip duration from the video timestamps
    max_frames: int = 300  # frames decoded (5 s at 60 fps)
    # encoded 4x video; must stay under TorchServe's max_response_size after base64
    max_output_bytes: int = 192 * 1024 * 1024

    def __post_init__(self) -> None:
        if self.max_pixels < 1 or self.max_seconds <= 0 or self.max_frames < 1 or self.max_output_bytes < 1:
            raise ValueError(f"limits must be positive, got {self}")

    def max_input_bytes(self) -> int:
        """The largest accepted video file: uncompressed 8-bit RGB at the limits (compressed ones are smaller)."""
        return max_video_bytes(self.max_pixels, self.max_frames)

    def max_body_bytes(self) -> int:
        """The largest accepted request body (the proxy's limit and TorchServe's ``max_request_size``)."""
        return request_limit_bytes(self)

    def check_header(
        self, width: int, height: int, seconds: float | None, frames: int | None, fps: Fraction | None
    ) -> None:
        """Reject from container metadata before decoding; unknown values (None) are checked while decoding."""
        self.check_area(width, height)
        if seconds is not None:
            self.check_seconds(seconds, fps)
        if frames:
            self.check_frames(frames)

    def check_area(self, width: int, height: int) -> None:
        if width * height > self.max_pixels:
            raise LimitExceeded(
                f"frame size {width}x{height} = {width * height} pixels is over the limit of {self.max_pixels} pixels "
                f"(max_pixels, e.g. 200x200); downscale the video, "
                f"or {RAISE_HINT.format(flag='max_pixels', key='max_pixels')}"
            )

    def check_seconds(self, seconds: float, fps: Fraction | None = None) -> None:
        slack = 0.5 / float(fps) if fps else 0.02  # timestamps are rounded to the container's clock
        if seconds > self.max_seconds + slack:
            raise LimitExceeded(
                f"duration {seconds:.3f} s is over the limit of {self.max_seconds:g} s (max_seconds); "
                f"cut the video, or {RAISE_HINT.format(flag='max_seconds', key='max_seconds')}"
            )

    def check_frames(self, frames: int) -> None:
        if frames > self.max_frames:
            raise LimitExceeded(
                f"{frames} frames is over the limit of {self.max_frames} frames (max_frames); "
                f"cut the video, or {RAISE_HINT.format(flag='max_frames', key='max_frames')}"
            )

    def check_output(self, n_bytes: int) -> None:
        if n_bytes > self.max_output_bytes:
            raise LimitExceeded(
                f"the 4x video is {n_bytes / 2**20:.1f} MiB, over the limit of {self.max_output_bytes / 2**20:.0f} MiB "
                f"(max_output_bytes, bounded by TorchServe's max_response_size); very noisy content compresses badly: "
                f"send a shorter clip, or {RAISE_HINT.format(flag='max_output_mb', key='max_output_bytes')}"
            )


# Demuxers FFmpeg may pick for an upload (the model server's reader, the proxy's header probe). A whitelist
# keeps playlist-style demuxers (HLS, concat) out: they open the URLs or files named inside the upload.
# No still-image demuxers: a single picture is not a video.
DEMUXERS = "avi,mov,matroska,flv,mpegts,mpeg,ogg,asf,nut,ivf,h264,hevc,m4v,mjpeg,rawvideo,gif"
