"""TorchServe handler: base64 video in, 4x super-resolved base64 video out (FRVSR).

``initialize`` rebuilds FRVSR from the config stored in the checkpoint (not BaseHandler's "one class
in the model file" loader); ``preprocess`` validates the body and reads the container header (limits
are checked before any decoding); ``inference`` streams decode -> model -> encode; ``postprocess``
returns plain base64, with the per-stage timing (``X-FRVSR-Timing``), the output container
(``X-FRVSR-Format``) and the serving model and version (``X-FRVSR-Model``) as response headers.

KServe's v1 protocol is answered in kind, in both ways TorchServe can hand it over:
- ``service_envelope=kserve`` (KServe's TorchServe runtime): TorchServe's envelope has already taken the
  instances out of ``{"instances": [...]}``, so each row *is* a platform body; the handler answers
  ``{"content", "elapsed_time"}`` per instance and the envelope wraps the list as ``{"predictions": [...]}``.
- no envelope (``POST /v1/models/<name>:predict`` on a plain TorchServe): the row's body is the whole v1
  request; the handler unwraps it and answers the whole ``{"predictions": [...]}`` itself.
Errors keep their status and message either way. One clip per request (``instances`` of length one).
"""

from __future__ import annotations

import base64
import logging
import time
from pathlib import Path

import numpy as np
import torch
from ts.torch_handler.base_handler import BaseHandler
from ts.utils.util import PredictionException

from model.inference import resolve_precision, super_resolve
from model.runtime import resolve_device, threads_per_worker
from model.variants import load_model_set
from video.pipeline import Job, Result, open_job, upscale_video
from video.settings import HandlerSettings
from wire import v1
from wire.contract import FORMAT_HEADER, INPUT_HEADER, MODEL_HEADER, TIMING_HEADER, b64_len
from wire.errors import BadRequest, VideoRequestError

log = logging.getLogger(__name__)


def pick_device(gpu_id: object) -> torch.device:
    """TorchServe's ``gpu_id`` -> that CUDA device when CUDA is usable, else the CPU."""
    return resolve_device(f"cuda:{int(gpu_id)}" if gpu_id is not None and torch.cuda.is_available() else "cpu")


class FRVSRHandler(BaseHandler):
    """One request = one clip; batchSize 1 (a batch is served clip by clip)."""

    def initialize(self, context) -> None:
        self.context = context
        self.manifest = context.manifest
        props = context.system_properties
        yaml_config = getattr(context, "model_yaml_config", None) or {}
        self.settings = HandlerSettings.from_dict(yaml_config.get("handler"))
        self.device = pick_device(props.get("gpu_id"))
        if self.device.type == "cpu":
            torch.set_num_threads(
                threads_per_worker(self.settings.torch_threads, int(yaml_config.get("minWorkers") or 1))
            )
        ckpt = Path(props["model_dir"]) / self.manifest["model"]["serializedFile"]
        # rebuilds the stored architecture, eval mode; a paired checkpoint brings its compressed-input model too
        self.models, _ = load_model_set(ckpt, self.device)
        self._warm_up()
        m = self.manifest.get("model", {})
        self.model_label = f"{m.get('modelName', ckpt.stem)}/{m.get('modelVersion', '?')}"
        self.initialized = True
        log.info(
            "FRVSR ready: %s (%s) on %s (%s), %d torch threads, limits %s",
            ckpt.name,
            f"models {sorted(self.models.models)}, {self.models.rule}" if self.models.paired else "one model",
            self.device,
            resolve_precision(self.settings.precision, self.device),
            torch.get_num_threads(),
            self.settings.limits,
        )

    def _warm_up(self) -> None:
        """First calls pay for kernel selection and allocation; pay it here, not in the first request."""
        for model in self.models.models.values():
            frames = (np.zeros((32, 32, 3), np.uint8) for _ in range(2))
            for _ in super_resolve(model, frames, device=self.device, precision=self.settings.precision):
                pass

    def preprocess(self, data: list) -> list[tuple[Job | Exception, str]]:
        """Each row -> (its opened clip, or its error to raise in inference; the protocol it came in)."""
        if not isinstance(data, list) or not data:  # the kserve envelope found no "instances" list
            raise _to_prediction_error(BadRequest(v1.V1_USAGE))
        enveloped = [_is_instance(row) for row in data]
        if any(enveloped) and len(data) != 1:
            raise _to_prediction_error(BadRequest(f"{v1.V1_USAGE} (got {len(data)} instances)"))
        jobs: list[tuple[Job | Exception, str]] = []
        for row, instance in zip(data, enveloped, strict=True):
            protocol = v1.V1_INSTANCE if instance else v1.PLATFORM
            try:
                if instance:
                    body = row
                else:
                    body, protocol = v1.unwrap(row.get("data") if row.get("data") is not None else row.get("body"))
                jobs.append((open_job(body, self.settings), protocol))
            except Exception as e:  # noqa: BLE001 - raised, with its status, in inference
                jobs.append((e, protocol))
        return jobs

    def inference(self, jobs: list, *args, **kwargs) -> list[tuple[Result, str, str]]:
        results = []
        try:
            for job, protocol in jobs:
                if isinstance(job, Exception):
                    raise _to_prediction_error(job)
                try:
                    info = job.reader.info
                    quality, model = self.models.pick(info.codec, info.bits_per_pixel, job.input_quality)
                    why = (
                        "requested"
                        if job.input_quality
                        else f"auto: {self.models.rule.describe(info.codec, info.bits_per_pixel)}"
                    )
                    settings = job.settings_for(self.settings)
                    res = upscale_video(model, job.reader, settings, job.out_format, self.device)
                    res.timings.open = job.open_s
                    self.settings.limits.check_output(b64_len(len(res.video)))
                except Exception as e:
                    raise _to_prediction_error(e) from e
                results.append((res, protocol, f"{quality} ({why})"))
        finally:
            for job, _ in jobs:
                if isinstance(job, Job):
                    job.reader.close()
        return results

    def postprocess(self, results: list[tuple[Result, str, str]]) -> list[str | dict]:
        """Each answer in the protocol its request came in (``wire.v1.reply``; see the module docstring)."""
        out: list[str | dict] = []
        for idx, (res, protocol, variant) in enumerate(results):
            t = time.perf_counter()
            b64 = base64.b64encode(res.video).decode("ascii")
            dt = time.perf_counter() - t  # base64 is part of producing the response
            res.timings.encode += dt
            res.timings.total += dt
            timing = res.timings.header()
            log.info(
                "timing %s: %s %dx%d, %d bytes out, input %s; %s",
                TIMING_HEADER,
                res.family,
                res.width,
                res.height,
                len(res.video),
                variant,
                timing,
            )
            _set_header(self.context, idx, TIMING_HEADER, timing)
            _set_header(self.context, idx, FORMAT_HEADER, res.family)
            _set_header(self.context, idx, MODEL_HEADER, self.model_label)
            _set_header(self.context, idx, INPUT_HEADER, variant)
            out.append(v1.reply(protocol, b64, res.timings.total))
        return out


def _is_instance(row: object) -> bool:
    """TorchServe's rows hold the request under ``body`` or ``data``; anything else is an instance that
    TorchServe's kserve envelope took out of ``{"instances": [...]}``."""
    return not (isinstance(row, dict) and ("body" in row or "data" in row))


def _to_prediction_error(e: Exception) -> PredictionException:
    if isinstance(e, PredictionException):
        return e
    if isinstance(e, VideoRequestError):
        log.info("rejected (%d): %s", e.status, e)
        return PredictionException(str(e), e.status)
    log.error("super-resolution failed", exc_info=e)
    return PredictionException(
        f"internal error while super-resolving ({type(e).__name__}: {e}); see the TorchServe log", 500
    )


def _set_header(context, idx: int, key: str, value: str) -> None:
    """Response headers exist only under a real TorchServe request (a MockContext has none)."""
    if getattr(context, "request_processor", None):
        try:
            context.set_response_header(idx, key, value)
        except (AttributeError, IndexError, TypeError):
            log.debug("no response header support in this context")
