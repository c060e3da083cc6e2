"""``python -m benchmarks run [--quick] [options]``: see docs/benchmarks.md.

``python -m benchmarks chunked [options]``: chunked vs single pass (``benchmarks/chunked.py``).

``python -m benchmarks outputs [options]``: the ladder with and without HLS and the stills
(``benchmarks/outputs.py``).

``python -m benchmarks fleet [options]``: a chunked job on one worker process vs two
(``benchmarks/fleet.py``).

Writes ``benchmarks/results/<date>-<commit>.json``, ``.md`` and PNG plots (or under ``--out``),
prints the markdown tables on stdout, and shows live progress on stderr. Exit status 0 when every
run produced valid outputs, 1 otherwise (targets never change the exit status).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from benchmarks.display import Display
from benchmarks.harness import Options, run
from benchmarks.model import RUNNERS
from benchmarks.publish import DEFAULT_OUT, publish
from transcoder import logs

FULL_WORKLOADS = (
    "1080p-moov-end",
    "1080p-faststart",
    "1080p-no-audio",
    "720p-native",
    "mpeg2-ps",
    "1080p-grain",
)
# (full, quick) defaults of the options that differ between the two modes.
DEFAULTS = {
    "reps": (3, 2),
    "duration": (30.0, 3.0),
    "presets": ("veryfast,faster,medium", "veryfast"),
    "crfs": ("21,23,25", "23"),
    "sweep_duration": (10.0, 3.0),
    "control_jobs": (200, 10),
    "vmaf_subsample": (5, 1),
}


def _csv(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    sub = root.add_subparsers(dest="command", required=True)
    p = sub.add_parser("run", help="run the benchmarks and write the results")
    p.add_argument("--quick", action="store_true", help="short cuts, fewer runs (CI smoke test)")
    p.add_argument("--reps", type=int, help="repetitions of each runner (full 3, quick 2)")
    p.add_argument("--duration", type=float, help="seconds of each workload (full 30, quick 3)")
    p.add_argument(
        "--workloads", type=_csv, help=f"comma list (default {','.join(FULL_WORKLOADS)})"
    )
    p.add_argument("--runners", type=_csv, help=f"comma list of {','.join(RUNNERS)} (default all)")
    p.add_argument("--presets", type=_csv, help="x264 presets to sweep ('' to skip the sweep)")
    p.add_argument("--crfs", type=_csv, help="CRF values to sweep (full 21,23,25, quick 23)")
    p.add_argument("--sweep-duration", type=float, help="seconds of 1080p for the sweep")
    p.add_argument(
        "--control-jobs", type=int, help="one-second jobs for the control plane (0 skips)"
    )
    p.add_argument("--preset", help="x264 preset for W/B0/B1/B3 (default: the worker's setting)")
    p.add_argument(
        "--source-access",
        choices=("gateway", "presigned"),
        default="gateway",
        help="how W's ffmpeg reads the source (TRANSCODER_SOURCE_ACCESS; default gateway)",
    )
    p.add_argument("--no-quality", action="store_true", help="skip PSNR/SSIM/VMAF")
    p.add_argument("--no-vmaf", action="store_true", help="PSNR/SSIM only")
    p.add_argument("--vmaf-ffmpeg", help="an ffmpeg built with libvmaf (default: search)")
    p.add_argument("--vmaf-subsample", type=int, help="score every Nth frame (full 5, quick 1)")
    p.add_argument("--timeout", type=float, default=1800.0, help="seconds allowed per job")
    p.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help=f"results directory ({DEFAULT_OUT})"
    )
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    return root


def options_from(args: argparse.Namespace) -> Options:
    mode = 1 if args.quick else 0

    def pick(name: str) -> object:
        given = getattr(args, name)
        return DEFAULTS[name][mode] if given is None else given

    presets = args.presets if args.presets is not None else _csv(str(pick("presets")))
    crfs = args.crfs if args.crfs is not None else _csv(str(pick("crfs")))
    runners = args.runners or RUNNERS
    unknown = [r for r in runners if r not in RUNNERS]
    if unknown:
        raise SystemExit(f"unknown runner(s) {unknown}; choose from {', '.join(RUNNERS)}")
    return Options(
        quick=args.quick,
        reps=max(1, int(str(pick("reps")))),
        duration_s=float(str(pick("duration"))),
        workloads=args.workloads or FULL_WORKLOADS,
        runners=tuple(r for r in RUNNERS if r in runners),
        presets=tuple(presets),
        crfs=tuple(int(c) for c in crfs),
        sweep_duration_s=float(str(pick("sweep_duration"))),
        control_jobs=int(str(pick("control_jobs"))),
        quality=not args.no_quality,
        vmaf=not args.no_vmaf,
        vmaf_ffmpeg=args.vmaf_ffmpeg,
        vmaf_subsample=max(1, int(str(pick("vmaf_subsample")))),
        x264_preset=args.preset,
        timeout_s=args.timeout,
        source_access=args.source_access,
    )


def _interrupt(signum: int, frame: object) -> None:
    # SIGTERM unwinds like Ctrl-C, so the worker and the emulator children are stopped.
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    raw = list(sys.argv[1:] if argv is None else argv)
    if raw[:1] == ["chunked"]:
        from benchmarks import chunked

        return chunked.main(raw[1:])
    if raw[:1] == ["outputs"]:
        from benchmarks import outputs

        return outputs.main(raw[1:])
    if raw[:1] == ["fleet"]:
        from benchmarks import fleet

        return fleet.main(raw[1:])
    options = options_from(parser().parse_args(raw))
    command = shlex.join(["python", "-m", "benchmarks", *raw])
    # The emulator accepts any credentials; never let a developer's real ones reach a request.
    os.environ["AWS_ACCESS_KEY_ID"] = "testing"
    os.environ["AWS_SECRET_ACCESS_KEY"] = "testing"  # noqa: S105 - the emulator's dummy
    os.environ.pop("AWS_SESSION_TOKEN", None)
    os.environ.pop("AWS_PROFILE", None)
    logs.configure("warning", json=True)  # harness-side adapters log to stderr, warnings only
    signal.signal(signal.SIGTERM, _interrupt)
    load_start = os.getloadavg()
    args = parser().parse_args(raw)
    with Display() as display:
        outcome = asyncio.run(run(options, display))
        display.begin("writing results")
        written, text = publish(
            outcome, options, command, args.out, load_start, with_plots=not args.no_plots
        )
    print(text)
    for path in written:
        print(f"wrote {path}", file=sys.stderr)
    return 0 if outcome.runs and all(r.valid for r in outcome.runs) else 1


if __name__ == "__main__":
    sys.exit(main())
