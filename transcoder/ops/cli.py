"""The ``transcoder`` command: worker, bootstrap, submit, status, demo.

The only place (with ``app``) that constructs settings, clients and signal handlers.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import importlib
import json
import os
import shlex
import signal
import sys
from collections.abc import Awaitable, Callable, Iterator, Sequence
from pathlib import Path

from transcoder import heap, logs
from transcoder.aws.clients import open_clients
from transcoder.config import ConfigError, Settings, load_settings
from transcoder.metrics import Health
from transcoder.ops.bootstrap import bootstrap
from transcoder.runtime import app

log = logs.get_logger("transcoder.ops.cli")
EMULATOR_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
}


def install_signals(stop: asyncio.Event, force: asyncio.Event) -> None:
    """First SIGTERM/SIGINT: stop receiving and drain. Second: force (hand back everything now)."""
    loop = asyncio.get_running_loop()

    def on_signal(signum: int) -> None:
        if stop.is_set():
            log.warning("worker.forced", signal=signal.Signals(signum).name)
            force.set()
        else:
            log.info("worker.signal", signal=signal.Signals(signum).name)
            stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)


async def run_worker(settings: Settings) -> int:
    heap.bound()
    async with open_clients(settings) as clients:
        services = await app.connect(clients, settings)
        health = Health(max_silence_s=settings.wait_time_s + 60)
        worker = await app.build_worker(settings, services, health)
        stop, force = asyncio.Event(), asyncio.Event()
        install_signals(stop, force)
        async with app.background(settings, services, health, lambda: worker.unfit):
            # 0, or 3 (EXIT_UNFIT) when the worker retired: ECS or compose replace it.
            return await worker.run(stop, force)


async def run_bootstrap(settings: Settings) -> int:
    async with open_clients(settings) as clients:
        resources = await bootstrap(clients, settings)
    print(json.dumps(dataclasses.asdict(resources)))
    return 0


async def run_submit(settings: Settings, files: Sequence[Path], user_id: str) -> int:
    from transcoder.ops.demo import submit

    async with open_clients(settings) as clients:
        jobs = await submit(clients, settings, files, user_id=user_id)
    for job in jobs:
        print(
            json.dumps(
                {"file": job.file, "user_id": job.user_id, "video_id": job.video_id, "key": job.key}
            )
        )
    return 0


@contextlib.contextmanager
def embedded_emulator_if_needed(settings: Settings) -> Iterator[Settings]:
    """No endpoint configured: start moto's server on a free loopback port for this run."""
    if settings.endpoint_url:
        yield settings
        return
    from transcoder.ops.emulator import running_emulator

    for name, value in EMULATOR_CREDENTIALS.items():
        os.environ.setdefault(name, value)
    with running_emulator() as emulator:
        log.info("demo.emulator", endpoint=emulator.url)
        yield settings.model_copy(
            update={
                "endpoint_url": emulator.url,
                "wait_time_s": 1,
                "heartbeat_interval_s": 2.0,
                "retry_base_s": 1.0,
                "retry_max_s": 4.0,
            }
        )


async def run_demo(
    settings: Settings,
    files: list[Path],
    out: Path | None,
    as_json: bool,
    timeout_s: float,
    verbose: bool = False,
) -> int:
    from transcoder.ops.demo import demo_view
    from transcoder.ops.demo import run_demo as demo

    if not files:
        from transcoder.ops.extras import ensure_samples

        files = list(ensure_samples().values())
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        print(f"demo: no such file: {', '.join(missing)}", file=sys.stderr)
        return 2
    with demo_view(files, as_json=as_json, verbose=verbose) as view:
        with embedded_emulator_if_needed(settings) as demo_settings:
            async with open_clients(demo_settings) as clients:
                results = await demo(
                    clients, demo_settings, files, out=out, timeout_s=timeout_s, view=view
                )
        view.finish(results)
    if out is not None:
        # --json keeps stdout to the JSON lines.
        print(serve_hint(out), file=sys.stderr if as_json else sys.stdout, flush=True)
    return 0 if all(r["status"] in ("COMPLETED", "FAILED") for r in results) else 1


def serve_hint(out: Path) -> str:
    """Where the player page is, and the one command that serves it (browsers refuse file://)."""
    return (
        f"player page: {out / 'index.html'}\n"
        f"  serve it:  python -m http.server -d {shlex.quote(str(out))} -b 127.0.0.1"
        "  and open http://127.0.0.1:8000/"
    )


Runner = Callable[[Settings, argparse.Namespace], Awaitable[int]]

DESCRIPTION = """\
Transcode uploaded videos into 720p and 1080p H.264 renditions: MP4s, an HLS stream, a poster and
scrubbing thumbnails, all from one ffmpeg run.

Uploads land in S3 under raw/; each becomes a job on an SQS queue, a worker runs ffmpeg and writes
its outputs under transcoded/, and every job's state is kept in a DynamoDB table. Try it with
no AWS account at all: `transcoder demo` starts a local emulator and runs everything on your
machine.
"""

EPILOG = """\
examples:
  transcoder demo                          run sample videos through the whole pipeline locally
  transcoder demo --out out/ my.mov        transcode your own file; out/index.html plays the results
  transcoder bootstrap                     create the bucket, queues and table (safe to repeat)
  transcoder submit clip.mp4 --user u1     upload a file to raw/u1/ and enqueue it
  transcoder worker                        process jobs until stopped (Ctrl-C drains, twice: now)
  transcoder status clip --user u1         show one job
  transcoder status --status FAILED        list failed jobs, oldest first
  transcoder dlq list                      show messages that gave up

configuration comes from the environment: AWS_ENDPOINT_URL, AWS_REGION and the usual AWS
credentials; TRANSCODER_BUCKET, TRANSCODER_QUEUE, TRANSCODER_TABLE and the other TRANSCODER_*
variables (docs/configuration.md). Run `transcoder COMMAND --help` for a command's options.
"""


# Over 40 lines: one flat list of argparse declarations, read top to bottom like --help.
def parser() -> argparse.ArgumentParser:
    """The command tree; each sub-command sets ``run``: async (settings, args) -> exit code.

    Command groups that live elsewhere register themselves through ``add_commands(sub)``.
    """
    root = argparse.ArgumentParser(
        prog="transcoder",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = root.add_subparsers(dest="command", required=True, metavar="COMMAND")
    worker = sub.add_parser(
        "worker",
        help="process jobs from the queue until stopped",
        description="Receive jobs from the queue and transcode them until SIGTERM or Ctrl-C. "
        "The first signal stops receiving and lets running jobs finish within the grace period; "
        "a second one hands every running job back to the queue at once.",
    )
    worker.set_defaults(run=lambda s, a: run_worker(s))
    boot = sub.add_parser(
        "bootstrap",
        help="create the bucket, queues and table (safe to repeat)",
        description="Create the S3 bucket, the jobs queue with its dead-letter queue and the "
        "DynamoDB table, where they do not exist yet. Prints what it found or created as JSON.",
    )
    boot.set_defaults(run=lambda s, a: run_bootstrap(s))
    submit = sub.add_parser(
        "submit",
        help="upload videos and enqueue them",
        description="Upload each file to raw/USER/ in the bucket and enqueue it exactly as an S3 "
        "upload notification would. Prints one JSON line per file with its video id.",
    )
    submit.add_argument("files", nargs="+", type=Path, metavar="FILE", help="videos to upload")
    submit.add_argument("--user", default="local", help="user id for the raw/ key (default: local)")
    submit.set_defaults(run=lambda s, a: run_submit(s, a.files, a.user))
    demo = sub.add_parser(
        "demo",
        help="try everything locally: emulator, sample videos, a worker",
        description="Start a local AWS emulator (unless AWS_ENDPOINT_URL is set), upload the "
        "sample videos or your FILEs, run one worker until every job has finished, and show the "
        "results. On a terminal you see a live table with each file's stage and progress, and the "
        "worker's logs go to a file whose path is printed.",
    )
    demo.add_argument(
        "files", nargs="*", type=Path, metavar="FILE", help="videos (default: the sample videos)"
    )
    demo.add_argument(
        "--json", action="store_true", help="print one JSON line per file instead of a table"
    )
    demo.add_argument(
        "--out",
        type=Path,
        metavar="DIR",
        help="download every completed job's outputs (MP4s, poster, thumbnails, HLS) to "
        "DIR/<video_id>/ and write a player page, DIR/index.html",
    )
    demo.add_argument(
        "--timeout",
        type=float,
        default=900.0,
        metavar="SECONDS",
        help="give up waiting after this many seconds (default: 900)",
    )
    demo.add_argument(
        "--verbose", action="store_true", help="show the worker's logs instead of writing a file"
    )
    demo.set_defaults(run=lambda s, a: run_demo(s, a.files, a.out, a.json, a.timeout, a.verbose))
    for module in COMMAND_MODULES:
        importlib.import_module(module).add_commands(sub)
    return root


# Modules that contribute command groups (each defines ``add_commands(subparsers)``).
COMMAND_MODULES: tuple[str, ...] = ("transcoder.ops.commands", "autoscaling.cli")


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"transcoder: {exc}", file=sys.stderr)
        return 2
    logs.configure(settings.log_level, json=settings.log_json)
    run: Runner = args.run

    async def command() -> int:
        return await run(settings, args)

    return asyncio.run(command())


if __name__ == "__main__":
    sys.exit(main())
