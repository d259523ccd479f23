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

import torch
from ts.torch_handler.base_handler import BaseHandler
from ts.utils.util import PredictionException

from handler.upscaler import Served, Upscaler
from model.runtime import resolve_device
from video.pipeline import Job, open_job
from video.settings import HandlerSettings
from wire import v1
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
        ckpt = Path(props["model_dir"]) / self.manifest["model"]["serializedFile"]
        m = self.manifest.get("model", {})
        label = f"{m.get('modelName', ckpt.stem)}/{m.get('modelVersion', '?')}"
        workers = int(yaml_config.get("minWorkers") or 1)
        self.upscaler = Upscaler(ckpt, self.settings, self.device, workers, label)
        self.models = self.upscaler.models
        self.initialized = True

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

    def inference(self, jobs: list, *args, **kwargs) -> list[tuple[Served, str]]:
        results = []
        try:
            for job, protocol in jobs:
                if isinstance(job, Exception):
                    raise _to_prediction_error(job)
                try:
                    results.append((self.upscaler.serve(job), protocol))
                except Exception as e:
                    raise _to_prediction_error(e) from e
        finally:
            for job, _ in jobs:
                if isinstance(job, Job):
                    job.reader.close()
        return results

    def postprocess(self, results: list[tuple[Served, str]]) -> list[str | dict]:
        """Each answer in the protocol its request came in (``wire.v1.reply``; see the module docstring)."""
        out: list[str | dict] = []
        for idx, (served, protocol) in enumerate(results):
            res = served.result
            t = time.perf_counter()
            b64 = base64.b64encode(res.video).decode("ascii")
            dt = time.perf_counter() - t  # base64 is part of producing the response
            res.timings.encode += dt
            res.timings.total += dt
            for key, value in self.upscaler.headers(served).items():
                _set_header(self.context, idx, key, value)
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
