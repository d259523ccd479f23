"""Serve the model on KServe's own Python model server (no TorchServe): the KServe-native predictor.

    python -m serving.kserve_model --http_port 8080                 # the shipped default, as model "frvsr"
    python -m serving.kserve_model --http_port 8090 --model_path runs/models/<uuid>/ \\
        --used_model FRVSR_GAN_trial.pth --model_name frvsr

Routes (``kserve.ModelServer``): ``POST /v1/models/<name>:predict`` (v1, the bodies the TorchServe runtime
takes), ``POST /v2/models/<name>/infer`` (the Open Inference Protocol), ``GET /v1/models/<name>`` and
``GET /v2/models/<name>/ready`` (``ready`` once the models are loaded and warm), ``GET /metrics``
(Prometheus). The adapter is ``handler.kserve_predictor``; the proxy fronts it unchanged with
``client_infer.py --kserve_url http://<host>:<port>/v1/models/<name>``. KServe's REST server binds every
interface (0.0.0.0, its own choice: a pod's port); gRPC is off. In a cluster: ``deploy/kserve/``.
"""

from __future__ import annotations

import argparse
import logging
import sys

from common.paths import DEFAULT_MODEL_FILE, PRETRAINED_DIR
from serving.service import resolve_checkpoint
from video.settings import HandlerSettings

DEFAULT_NAME = "frvsr"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m serving.kserve_model", description=__doc__.split("\n\n")[0])
    p.add_argument("--http_port", type=int, default=8080, help="the REST port (default 8080, KServe's)")
    p.add_argument("--model_path", default=str(PRETRAINED_DIR), help="folder holding the checkpoint, or the file")
    p.add_argument("--used_model", default=DEFAULT_MODEL_FILE, help="checkpoint file name inside --model_path")
    p.add_argument(
        "--model_name", default=DEFAULT_NAME, help=f"the model's name in the routes (default {DEFAULT_NAME})"
    )
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    p.add_argument("--torch_threads", type=int, default=0, help="intra-op threads (default 0: every core)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    import kserve  # noqa: PLC0415 - parses sys.argv at import (parse_known_args); after ours

    from handler.kserve_predictor import FRVSRPredictor  # noqa: PLC0415

    try:
        checkpoint = resolve_checkpoint(a.model_path, a.used_model)
    except Exception as e:  # noqa: BLE001 - StartupError and friends: say it and exit
        print(f"error: {e}", file=sys.stderr)
        return 2
    model = FRVSRPredictor(a.model_name, checkpoint, HandlerSettings(torch_threads=a.torch_threads), a.device)
    model.load()
    kserve.ModelServer(http_port=a.http_port, enable_grpc=False, workers=1).start([model])
    return 0


if __name__ == "__main__":
    sys.exit(main())
