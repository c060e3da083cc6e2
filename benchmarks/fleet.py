"""``python -m benchmarks fleet``: one chunked job on one worker process against two (issue 15).

The issue's wall figure, measured on the real path rather than on ffmpeg alone
(``benchmarks/chunked.py --parallel`` runs the chunks' ffmpeg in a thread pool; this runs the
fleet): a private moto emulator on a free loopback port, fresh resources, the ``1080p-moov-end``
workload (``samples/workloads.py``) cut to ``--duration`` seconds, uploaded and enqueued through
the production path (``transcoder.ops.demo.submit``: the real enqueue handler), and N real
``python -m transcoder worker`` processes with ``TRANSCODER_FFMPEG_THREADS=1``,
``TRANSCODER_CHUNK_THRESHOLD_S=0`` (every source is chunked) and ``TRANSCODER_CHUNK_S`` from
``--chunk-s``; HLS and stills keep the worker's defaults. One run is upload -> ``COMPLETED``:

* the workers are started fresh for each run and waited for (``worker.started``) before the clock
  starts, so a run's wall is the job's, not Python's start-up;
* wall time is from the upload's start to the job record reading ``COMPLETED`` (polled);
* CPU is exact: after the job each worker is stopped with SIGTERM and reaped with ``os.wait4``,
  whose rusage holds the worker and every ffmpeg/ffprobe it reaped (start-up and idle polling
  included, a fraction of a second each); the emulator's CPU over the run is reported beside it;
* parts per worker come from each worker's ``job.part_encoded`` log lines, and ``job.stitching``
  names the worker that stitched.

Runs alternate 1 and 2 workers (``--reps`` k: 1,2 for even k, 2,1 for odd k; a fresh video id each
time), and the speed-up is the median of the per-pair ratios (1-worker wall / 2-worker wall), so a
drift in the shared machine's load hits both sides of a ratio. A single pass (chunking off, one
worker) runs once at the end as the reference for chunked-on-one-worker. Every rendition is
downloaded and checked with the publish gate (``verify.check_complete`` and ``verify.check``).
Writes ``benchmarks/results/<date>-<commit>-fleet.json`` and ``.md`` and prints the table.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from benchmarks.chunked import Source, prepare_source
from benchmarks.fleet_summary import Run, busy_s, markdown, phases, schedule, summarise
from benchmarks.harness import bench_settings
from benchmarks.publish import DEFAULT_OUT, record
from benchmarks.worker_runner import LogTail, worker_env
from transcoder import logs
from transcoder.aws.clients import Clients, open_clients
from transcoder.aws.status import JobStore
from transcoder.config import Settings
from transcoder.domain.job import output_key
from transcoder.media import probe, verify
from transcoder.ops.bootstrap import Resources, bootstrap
from transcoder.ops.demo import submit
from transcoder.ops.emulator import Emulator

WORKLOAD = "1080p-moov-end"
USER_ID = "fleet"
TERMINAL = ("COMPLETED", "FAILED")


@dataclass(frozen=True, slots=True)
class Options:
    duration_s: float = 90.0
    chunk_s: float = 10.0
    reps: int = 2
    threads: int = 1
    single_pass: bool = True
    timeout_s: float = 1800.0
    out: Path = DEFAULT_OUT


# ---------------------------------------------------------------------------- processes


class Worker:
    """``python -m transcoder worker`` logging JSON to a file; reaped with ``os.wait4``."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.log_path = log_path
        with log_path.open("wb") as log:
            self.popen = subprocess.Popen(
                [sys.executable, "-m", "transcoder", "worker"],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.events: list[dict[str, Any]] = []
        self._tail = LogTail(log_path)
        self.cpu_s: float | None = None

    def read(self) -> list[dict[str, Any]]:
        if self.cpu_s is None:  # once reaped, the log is read to its end and closed
            self.events += self._tail.read()
        return self.events

    def seen(self, event: str) -> int:
        return sum(1 for e in self.read() if e.get("event") == event)

    async def started(self, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not self.seen("worker.started"):
            if self.popen.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the worker did not start; see {self.log_path}")
            await asyncio.sleep(0.1)

    def reap(self, timeout_s: float = 60.0) -> float:
        """SIGTERM, then the exact CPU-seconds of the worker and every child it reaped."""
        if self.cpu_s is not None:
            return self.cpu_s
        with contextlib.suppress(ProcessLookupError):
            self.popen.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while True:
            pid, status, usage = os.wait4(self.popen.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                self.popen.kill()
                deadline = float("inf")
            time.sleep(0.05)
        self.popen.returncode = os.waitstatus_to_exitcode(status)
        self.read()
        self._tail.close()
        self.cpu_s = usage.ru_utime + usage.ru_stime
        return self.cpu_s


@contextlib.contextmanager
def workers(
    settings: Settings, count: int, root: Path, extra: dict[str, str]
) -> Iterator[list[Worker]]:
    """``count`` fresh workers; every one is stopped and reaped on the way out."""
    started: list[Worker] = []
    try:
        for n in range(count):
            env = worker_env(settings)
            scratch = root / f"scratch-{n}"
            env.update(extra)
            env.update(
                TRANSCODER_WORKER_ID=f"{settings.worker_id}-{root.name}-{n}",
                TRANSCODER_SCRATCH_DIR=str(scratch),
                PYTHONUNBUFFERED="1",
            )
            started.append(Worker(env, root / f"worker-{n}.log"))
        yield started
    finally:
        for worker in started:
            worker.reap()


def _emulator_cpu(emulator: Emulator) -> float:
    if emulator.pid is None:
        return 0.0
    times = psutil.Process(emulator.pid).cpu_times()
    return float(times.user + times.system)


# ---------------------------------------------------------------------------- one run


@dataclass
class Bench:
    settings: Settings
    clients: Clients
    resources: Resources
    emulator: Emulator
    source: Source
    root: Path
    timeout_s: float

    @property
    def store(self) -> JobStore:
        return JobStore(self.clients.dynamodb, self.resources.table)


def worker_settings(kind: str, options: Options) -> dict[str, str]:
    """The environment a run's workers get on top of ``worker_env`` (pure)."""
    return {
        "TRANSCODER_FFMPEG_THREADS": str(options.threads),
        "TRANSCODER_CHUNKING": "true" if kind == "chunked" else "false",
        "TRANSCODER_CHUNK_S": f"{options.chunk_s:g}",
        "TRANSCODER_CHUNK_THRESHOLD_S": "0",  # every source is chunked
        "TRANSCODER_LOG_LEVEL": "info",
    }


async def _wait_terminal(bench: Bench, video_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + bench.timeout_s
    while time.monotonic() < deadline:
        found = await bench.store.get(USER_ID, video_id)
        if found is not None and found.status.value in TERMINAL:
            return found.model_dump(mode="json", exclude_none=True)
        await asyncio.sleep(0.2)
    raise TimeoutError(f"{video_id} not terminal within {bench.timeout_s:.0f} s")


async def _gate(bench: Bench, run: Run, folder: Path) -> None:
    """Download every rendition and check it as the publish gate does."""
    src = bench.source
    for target in src.plan.targets:
        path = folder / f"{target.name}.mp4"
        key = output_key(target.name, USER_ID, run.video_id)
        try:
            response = await bench.clients.s3.get_object(Bucket=bench.settings.bucket, Key=key)
            async with response["Body"] as body:
                path.write_bytes(await body.read())
            facts = await probe.run(str(path), timeout_s=120)
            verify.check_complete(facts, src.media)
            seen = verify.check(path, facts, target, src.media, src.plan)
            run.frames[target.name] = seen.frames or 0
        except Exception as exc:  # a failed gate is a result, not a crash
            run.problems.append(f"{target.name}: {str(exc)[:300]}")
        with contextlib.suppress(Exception):
            await bench.clients.s3.delete_object(Bucket=bench.settings.bucket, Key=key)
        path.unlink(missing_ok=True)


def _observe(run: Run, record_: dict[str, Any], fleet: list[Worker]) -> None:
    run.status = str(record_.get("status"))
    if run.status != "COMPLETED":
        run.problems.append(f"{run.status}: {record_.get('error')}")
    parts = record_.get("parts")
    if parts:
        run.parts = len(parts["states"])
        run.chunks = len(parts["starts"])
        run.part_attempts = sum(int(s.get("attempts", 0)) for s in parts["states"])
    elif run.kind == "chunked":
        run.problems.append("the job was not chunked")
    run.parts_by_worker = [w.seen("job.part_encoded") for w in fleet]
    stitchers = [i for i, w in enumerate(fleet) if w.seen("job.stitching")]
    run.stitched_by = stitchers[0] if stitchers else None
    done = record_.get("renditions") or {}
    run.published = sorted(n for n, r in done.items() if r.get("status") == "COMPLETED")
    run.published += [kind for kind in ("hls", "poster", "thumbnails") if record_.get(kind)]


async def one_run(bench: Bench, kind: str, count: int, rep: int, options: Options) -> Run:
    run = Run(kind, count, rep, video_id=f"{kind}-{count}w-r{rep}-{secrets.token_hex(3)}")
    folder = bench.root / run.video_id
    folder.mkdir()
    upload = folder / f"{run.video_id}{bench.source.path.suffix}"
    upload.symlink_to(bench.source.path)  # submit() names the video after the file
    with workers(bench.settings, count, folder, worker_settings(kind, options)) as fleet:
        await asyncio.gather(*(w.started() for w in fleet))
        emulator_before = _emulator_cpu(bench.emulator)
        started_at, started = time.time(), time.monotonic()
        await submit(bench.clients, bench.settings, [upload], user_id=USER_ID)
        try:
            done = await _wait_terminal(bench, run.video_id)
        except TimeoutError as exc:
            done = {"status": "TIMEOUT", "error": str(exc)}
        run.wall_s = round(time.monotonic() - started, 2)
        run.emulator_cpu_s = round(_emulator_cpu(bench.emulator) - emulator_before, 2)
    run.worker_cpu_s = [round(w.reap(), 2) for w in fleet]
    run.cpu_s = round(sum(run.worker_cpu_s), 2)
    _observe(run, done, fleet)
    run.ffmpeg_s = [round(busy_s(w.events), 2) for w in fleet]
    run.phases_s = phases([e for w in fleet for e in w.events], started_at, run.wall_s)
    if run.status == "COMPLETED":
        await _gate(bench, run, folder)
    shutil.rmtree(folder, ignore_errors=True)
    return run


def _say(run: Run) -> None:
    print(
        f"  {run.kind} {run.workers} worker(s) rep {run.rep}: {run.wall_s:.1f} s wall, "
        f"{run.cpu_s:.1f} CPU-s {run.worker_cpu_s}, parts {run.parts_by_worker} of {run.parts}, "
        f"{'ok' if run.valid else 'INVALID ' + '; '.join(run.problems)}",
        file=sys.stderr,
        flush=True,
    )


# ---------------------------------------------------------------------------- invocation


@contextlib.asynccontextmanager
async def bench_for(options: Options, source: Source) -> AsyncIterator[Bench]:
    """A private emulator, fresh resources and a scratch root for one invocation."""
    with tempfile.TemporaryDirectory(prefix="bench-fleet-") as tmp:
        emulator = Emulator()
        emulator.start()
        try:
            settings = bench_settings(emulator.url, Path(tmp), None).model_copy(
                update={"ffmpeg_threads": options.threads, "wait_time_s": 1}
            )
            async with open_clients(settings) as clients:
                resources = await bootstrap(clients, settings)
                yield Bench(
                    settings, clients, resources, emulator, source, Path(tmp), options.timeout_s
                )
        finally:
            emulator.stop()


async def measure(options: Options) -> dict[str, Any]:
    """Every run of one invocation, in the order described in the module docstring."""
    source = await prepare_source(options.duration_s)
    runs: list[Run] = []
    async with bench_for(options, source) as bench:
        for rep, count in schedule(options.reps):
            runs.append(await one_run(bench, "chunked", count, rep, options))
            _say(runs[-1])
        if options.single_pass:
            runs.append(await one_run(bench, "single", 1, -1, options))
            _say(runs[-1])
    return {
        "source": {
            "workload": WORKLOAD,
            "path": str(source.path),
            "duration_s": source.media.duration_s,
            "size": f"{source.media.width}x{source.media.height}",
            "fps": source.media.fps,
            "keyint": source.plan.keyint,
            "renditions": [t.name for t in source.plan.targets],
            "chunk_s": options.chunk_s,
            "threads": options.threads,
        },
        "runs": [{**dataclasses.asdict(r), "valid": r.valid} for r in runs],
        "summary": summarise(runs),
        "valid": bool(runs) and all(r.valid for r in runs),
    }


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks fleet", description=__doc__)
    p.add_argument("--duration", type=float, default=90.0, help="seconds of 1080p (default 90)")
    p.add_argument("--chunk-s", type=float, default=10.0, help="TRANSCODER_CHUNK_S (default 10)")
    p.add_argument("--reps", type=int, default=2, help="pairs of 1- and 2-worker runs (default 2)")
    p.add_argument("--threads", type=int, default=1, help="TRANSCODER_FFMPEG_THREADS (default 1)")
    p.add_argument("--no-single-pass", action="store_true", help="skip the single-pass reference")
    p.add_argument("--timeout", type=float, default=1800.0, help="seconds allowed per job")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"results ({DEFAULT_OUT})")
    return p


def main(argv: Sequence[str]) -> int:
    args = parser().parse_args(argv)
    if args.duration <= args.chunk_s:
        raise SystemExit("--duration must be longer than --chunk-s, or there is one chunk")
    options = Options(
        duration_s=args.duration,
        chunk_s=args.chunk_s,
        reps=max(1, args.reps),
        threads=args.threads,
        single_pass=not args.no_single_pass,
        timeout_s=args.timeout,
        out=args.out,
    )
    # The emulator accepts any credentials; never let a developer's real ones reach a request.
    os.environ["AWS_ACCESS_KEY_ID"] = "testing"
    os.environ["AWS_SECRET_ACCESS_KEY"] = "testing"  # noqa: S105 - the emulator's dummy
    os.environ.pop("AWS_SESSION_TOKEN", None)
    os.environ.pop("AWS_PROFILE", None)
    logs.configure("warning", json=True)  # the harness side's adapters: warnings only, on stderr
    load_start = os.getloadavg()
    result = asyncio.run(measure(options))
    return record("fleet", argv, result, markdown, options.out, load_start)
