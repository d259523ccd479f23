"""The model side of a request, for any model server: what the TorchServe handler (``frvsr_handler``) and
KServe's model server (``kserve_predictor``) each wrap in their own few lines.

``Upscaler`` loads a checkpoint's models once (``model.variants``: one, or a clean-input model and its
compressed-input fine-tune), warms them up, and serves one opened clip (``video.pipeline.Job``): the
variant its input calls for (or the one the request asked for), at the request's output quality, the 4x
video checked against the output limit, and the ``X-FRVSR-*`` headers that describe the answer.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from model.inference import super_resolve
from model.quantize import load_for_serving
from model.runtime import threads_per_worker
from video.pipeline import Job, Result, upscale_video
from video.settings import HandlerSettings
from wire.contract import FORMAT_HEADER, INPUT_HEADER, MODEL_HEADER, TIMING_HEADER, b64_len

log = logging.getLogger(__name__)
WARM_UP_SIDES = (40, 64, 96)  # low-res warm-up frames (side x side+8): three sizes, see Upscaler._warm_up


@dataclass
class Served:
    """One clip's answer: the 4x video and its timings, and which model variant served it and why."""

    result: Result
    variant: str  # "compressed (auto: h264, 0.311 bpp)", "clean (requested)"


class Upscaler:
    """A checkpoint's models on ``device``, warm, serving one clip at a time per worker."""

    def __init__(self, checkpoint: Path, settings: HandlerSettings, device: torch.device, workers: int, label: str):
        self.settings, self.device, self.label = settings, device, label
        if device.type == "cpu":
            torch.set_num_threads(threads_per_worker(settings.torch_threads, workers))
        # rebuilds the stored architecture, eval mode; a paired checkpoint brings its compressed-input model too
        # int8 where this CPU and the checkpoint allow it, else bf16 / fp32; the reason goes to the log
        self.models, self.precision, why = load_for_serving(checkpoint, settings.precision, device)
        self.settings = replace(settings, precision=self.precision)
        t0 = time.perf_counter()
        self._warm_up()
        log.info(
            "FRVSR ready: %s (%s) on %s, precision %s (%s), warm-up %.1f s, %d torch threads, flow ahead %d, "
            "limits %s",
            Path(checkpoint).name,
            f"models {sorted(self.models.models)}, {self.models.rule}" if self.models.paired else "one model",
            device, self.precision, why, time.perf_counter() - t0, torch.get_num_threads(), settings.flow_ahead,
            settings.limits,
        )  # fmt: skip

    def _warm_up(self) -> None:
        """First calls pay for kernel selection, allocation and, for int8, the compile; pay it here, not in the
        first request. Three frame sizes: Inductor specialises on the first and generalises on the second
        (dynamic height and width), so no later size compiles again."""
        for model in self.models.models.values():
            for side in WARM_UP_SIDES:
                frames = (np.zeros((side, side + 8, 3), np.uint8) for _ in range(2))
                for _ in super_resolve(model, frames, device=self.device, precision=self.precision):
                    pass

    def serve(self, job: Job) -> Served:
        """Super-resolve an opened clip (the caller closes ``job.reader``); raises what the pipeline raises,
        ``VideoRequestError`` subclasses for the client's faults."""
        info = job.reader.info
        quality, model = self.models.pick(info.codec, info.bits_per_pixel, job.input_quality)
        why = (
            "requested" if job.input_quality else f"auto: {self.models.rule.describe(info.codec, info.bits_per_pixel)}"
        )
        res = upscale_video(model, job.reader, job.settings_for(self.settings), job.out_format, self.device)
        res.timings.open = job.open_s
        self.settings.limits.check_output(b64_len(len(res.video)))
        return Served(res, f"{quality} ({why})")

    def headers(self, served: Served) -> dict[str, str]:
        """The response headers that describe an answer (the proxy passes ``X-FRVSR-*`` on)."""
        res = served.result
        log.info(
            "timing %s: %s %dx%d, %d bytes out, input %s; %s",
            TIMING_HEADER, res.family, res.width, res.height, len(res.video), served.variant, res.timings.header(),
        )  # fmt: skip
        return {
            TIMING_HEADER: res.timings.header(),
            FORMAT_HEADER: res.family,
            MODEL_HEADER: self.label,
            INPUT_HEADER: served.variant,
        }
