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
        async with app.background(settings, services, health):
            await worker.run(stop, force)
    return 0


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
    settings: Settings, files: list[Path], out: Path | None, as_json: bool, timeout_s: float
) -> int:
    from transcoder.ops.demo import print_results
    from transcoder.ops.demo import run_demo as demo

    if not files:
        from transcoder.ops.extras import ensure_samples

        files = list(ensure_samples().values())
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        print(f"demo: no such file: {', '.join(missing)}", file=sys.stderr)
        return 2
    with embedded_emulator_if_needed(settings) as demo_settings:
        async with open_clients(demo_settings) as clients:
            results = await demo(clients, demo_settings, files, out=out, timeout_s=timeout_s)
    print_results(results, as_json=as_json)
    return 0 if all(r["status"] in ("COMPLETED", "FAILED") for r in results) else 1


Runner = Callable[[Settings, argparse.Namespace], Awaitable[int]]


def parser() -> argparse.ArgumentParser:
    """The command tree; each sub-command sets ``run``: async (settings, args) -> exit code.

    Command groups that live elsewhere register themselves through ``add_commands(sub)``.
    """
    root = argparse.ArgumentParser(prog="transcoder", description=__doc__)
    sub = root.add_subparsers(dest="command", required=True)
    worker = sub.add_parser("worker", help="run a worker until SIGTERM")
    worker.set_defaults(run=lambda s, a: run_worker(s))
    boot = sub.add_parser("bootstrap", help="create the bucket, queues and table (idempotent)")
    boot.set_defaults(run=lambda s, a: run_bootstrap(s))
    submit = sub.add_parser("submit", help="upload files to raw/ and enqueue them")
    submit.add_argument("files", nargs="+", type=Path)
    submit.add_argument("--user", default="local", help="user id for the raw/ key (default: local)")
    submit.set_defaults(run=lambda s, a: run_submit(s, a.files, a.user))
    demo = sub.add_parser("demo", help="emulator + samples + worker, end to end")
    demo.add_argument("files", nargs="*", type=Path, help="videos (default: the samples)")
    demo.add_argument("--json", action="store_true", help="one JSON line per job")
    demo.add_argument("--out", type=Path, help="download renditions to DIR/<video_id>/<name>.mp4")
    demo.add_argument(
        "--timeout", type=float, default=900.0, help="give up after this many seconds"
    )
    demo.set_defaults(run=lambda s, a: run_demo(s, a.files, a.out, a.json, a.timeout))
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
