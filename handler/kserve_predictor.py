"""KServe's own Python model server (the ``kserve`` package) in front of the same pipeline: the KServe-native
adapter, beside the TorchServe one (``frvsr_handler``); both are thin over ``handler.upscaler``.

Protocols, on ``kserve.ModelServer``'s routes:
- v1, ``POST /v1/models/<name>:predict``: ``{"instances": [{"content": "<base64 video>", ...}]}`` (one clip;
  the platform body's optional fields inside) -> ``{"predictions": [{"content": ..., "elapsed_time": ...}]}``,
  as the TorchServe runtime answers it (``wire.v1``).
- v2 (Open Inference Protocol), ``POST /v2/models/<name>/infer``: one ``BYTES`` input of shape ``[1]``
  holding the video as base64 text (KServe's REST decoder turns binary BYTES inputs into UTF-8 text, which
  a video is not), the platform's options as request ``parameters`` (``format``, ``crf``,
  ``input_quality``); the answer is one ``BYTES`` output ``video``: raw bytes with the binary tensor
  extension when the request sets ``"binary_data_output": true`` (no base64 inflation), else base64 text;
  its ``parameters`` say ``format`` and ``elapsed_time``.

Errors keep their status and message (``fastapi.HTTPException``: ``{"detail": "..."}``). Readiness is
``self.ready``, set once the models are loaded and warm. The ``X-FRVSR-*`` headers are returned as with
TorchServe. One clip at a time per server process (the model uses all the threads it is given).
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from pathlib import Path

import kserve
import numpy as np
from fastapi import HTTPException
from kserve import InferOutput, InferRequest, InferResponse

from handler.upscaler import Served, Upscaler
from model.runtime import resolve_device
from video.pipeline import Job, open_request
from video.settings import HandlerSettings
from wire import v1
from wire.errors import BadRequest, VideoRequestError
from wire.payload import decode_content, parse_body, request_from

log = logging.getLogger(__name__)

V2_INPUT = "video"  # the v2 request's input and the response's output
V2_USAGE = (
    'send {"inputs": [{"name": "video", "shape": [1], "datatype": "BYTES", "data": ["<base64 video>"]}], '
    '"parameters": {"format": "mp4", "binary_data_output": true}}'
)


class FRVSRPredictor(kserve.Model):
    """The checkpoint's models behind KServe's v1 and v2 routes, under ``name``."""

    def __init__(self, name: str, checkpoint: Path, settings: HandlerSettings, device: str = "cpu"):
        super().__init__(name, return_response_headers=True)
        self.checkpoint, self.settings, self.device = Path(checkpoint), settings, resolve_device(device)
        self.upscaler: Upscaler | None = None
        self._one_at_a_time = asyncio.Semaphore(1)

    def load(self) -> bool:
        self.upscaler = Upscaler(self.checkpoint, self.settings, self.device, 1, f"{self.name}/1.0")
        self.ready = True
        return self.ready

    async def predict(self, payload, headers=None, response_headers=None):
        t0 = time.perf_counter()
        v2 = isinstance(payload, InferRequest)
        try:
            req = v2_request(payload) if v2 else v1_request(payload)
            async with self._one_at_a_time:
                served = await asyncio.to_thread(self._serve, req)
        except VideoRequestError as e:
            log.info("rejected (%d): %s", e.status, e)
            raise HTTPException(e.status, str(e)) from None
        except Exception as e:
            log.error("super-resolution failed", exc_info=e)
            raise HTTPException(500, f"internal error while super-resolving ({type(e).__name__}: {e})") from None
        if response_headers is not None:
            response_headers.update(self.upscaler.headers(served))
        res, elapsed = served.result, time.perf_counter() - t0
        if not v2:
            return v1.reply(v1.V1, base64.b64encode(res.video).decode("ascii"), elapsed)
        binary = payload.use_binary_outputs
        data = res.video if binary else base64.b64encode(res.video).decode("ascii")
        out = InferOutput(V2_INPUT, [1], "BYTES")
        out.set_data_from_numpy(np.array([data], dtype=object), binary_data=binary)
        return InferResponse(
            response_id=payload.id or "",
            model_name=self.name,
            infer_outputs=[out],
            parameters={"format": res.family, "elapsed_time": round(elapsed, 4)},
            use_binary_outputs=binary,
        )

    def _serve(self, req) -> Served:
        job: Job = open_request(req, self.settings)
        try:
            return self.upscaler.serve(job)
        finally:
            job.reader.close()


def v1_request(payload: object):
    """KServe's v1 body -> the platform request inside it (``{"instances": [body]}``, one clip)."""
    body, protocol = v1.unwrap(payload)
    if protocol != v1.V1:
        raise BadRequest(v1.V1_USAGE)
    return parse_body(body, allow_raw=False)


def v2_request(payload: InferRequest):
    """An Open Inference Protocol request -> the platform request: one BYTES input holding base64 text."""
    inputs = [i for i in payload.inputs if i.name == V2_INPUT] or payload.inputs
    if len(inputs) != 1 or inputs[0].datatype != "BYTES":
        raise BadRequest(f"expected one BYTES input named {V2_INPUT!r}; {V2_USAGE}")
    data = inputs[0].data
    items = list(data) if isinstance(data, (list, tuple, np.ndarray)) else [data]
    if len(items) != 1 or not isinstance(items[0], (str, bytes)):
        raise BadRequest(f"the {V2_INPUT!r} input must hold one video (shape [1]); {V2_USAGE}")
    text = items[0].decode("ascii", errors="replace") if isinstance(items[0], bytes) else items[0]
    return request_from(decode_content(text), dict(payload.parameters or {}))
