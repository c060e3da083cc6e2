"""W: the real worker, end to end against the emulator, measured from outside its process.

The worker runs as ``python -m transcoder worker`` (the production entry point) with its
structured logs on a file. A run uploads the workload under ``raw/bench/``, invokes the real
enqueue handler with the S3 event for it, and waits for the worker's ``job.settled`` line:

* wall time starts at the enqueue (the S3 event) and ends at ``job.settled`` (after the delete);
* stages come from the worker's own log timestamps (claimed, planned, ffmpeg started/finished,
  transcoded, settled);
* CPU is the difference of psutil's ``cpu_times()`` of the worker process around the job: its
  own time is the Python worker, its reaped children's time is ffmpeg and ffprobe;
* peak RSS of the worker and of its ffmpeg, scratch disk and first output come from a Sampler;
* the source's bytes and requests come from the counting emulator.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from benchmarks.context import Bench, Prepared, check_outputs, remove, source_reads
from benchmarks.measurement import Sampled, Sampler, TreeCpu, tree_cpu
from benchmarks.model import Output, RunResult
from enqueue_lambda.handler import EnqueueConfig, Enqueuer, build, s3_event_for
from transcoder.config import Settings
from transcoder.domain.job import output_key

USER_ID = "bench"
# (stage name, from event, to event); "start" is the enqueue.
STAGES = (
    ("enqueue_receive_claim", "start", "job.claimed"),
    ("probe", "job.claimed", "job.planned"),
    ("transcode", "ffmpeg.started", "ffmpeg.finished"),
    ("verify_upload", "ffmpeg.finished", "job.transcoded"),
    ("settle", "job.transcoded", "job.settled"),
)


def worker_env(settings: Settings) -> dict[str, str]:
    """The environment that makes ``transcoder worker`` load exactly ``settings``' values."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRANSCODER_")}
    values = {
        "BUCKET": settings.bucket,
        "QUEUE": settings.queue,
        "DEAD_LETTER_QUEUE": settings.dead_letter_queue,
        "TABLE": settings.table,
        "REGION": settings.region,
        "WAIT_TIME_S": str(settings.wait_time_s),
        "X264_PRESET": settings.x264_preset,
        "SOURCE_ACCESS": settings.source_access,
        "FFMPEG_THREADS": str(settings.ffmpeg_threads),
        "SCRATCH_DIR": str(settings.scratch_dir),
        "METRICS_HOST": "127.0.0.1",
        "METRICS_PORT": "0",
        "LOG_LEVEL": "info",
        "LOG_JSON": "true",
        "WORKER_ID": settings.worker_id,
    }
    env.update({f"TRANSCODER_{k}": v for k, v in values.items()})
    env["AWS_ENDPOINT_URL"] = settings.endpoint_url or ""
    env.setdefault("AWS_ACCESS_KEY_ID", "testing")
    env.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    return env


class LogTail:
    """Reads the worker's JSON log lines as they are appended."""

    def __init__(self, path: Path) -> None:
        self._handle: IO[str] = path.open("r", encoding="utf-8", errors="replace")
        self._partial = ""

    def read(self) -> list[dict[str, Any]]:
        chunk = self._partial + self._handle.read()
        *lines, self._partial = chunk.split("\n")
        events = []
        for line in lines:
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                continue  # a traceback or a non-JSON line
            if isinstance(event, dict):
                events.append(event)
        return events

    def close(self) -> None:
        self._handle.close()


def event_time(event: dict[str, Any]) -> float:
    """structlog's ISO 8601 UTC timestamp as epoch seconds."""
    return datetime.fromisoformat(str(event["timestamp"])).timestamp()


class WorkerProcess:
    """``python -m transcoder worker`` with its logs on a file; stopped with SIGTERM."""

    def __init__(self, settings: Settings, log_path: Path) -> None:
        self._settings = settings
        self._log_path = log_path
        self._process: subprocess.Popen[bytes] | None = None
        self.tail: LogTail | None = None

    @property
    def pid(self) -> int:
        assert self._process is not None
        return self._process.pid

    def alive(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def _spawn(self) -> None:
        with self._log_path.open("wb") as log:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "transcoder", "worker"],
                env=worker_env(self._settings),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=log,
            )

    async def start(self, timeout_s: float = 60.0) -> None:
        """Start the worker and wait for its ``worker.started`` log line."""
        self._spawn()
        self.tail = LogTail(self._log_path)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and self.alive():
            if any(e.get("event") == "worker.started" for e in self.tail.read()):
                return
            await asyncio.sleep(0.1)
        raise RuntimeError(f"the worker did not start; see {self._log_path}")

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGTERM)
            try:
                self._process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        if self.tail is not None:
            self.tail.close()


def enqueuer_for(settings: Settings, queue_url: str) -> Enqueuer:
    """The real enqueue Lambda's handler object, pointed at the emulator."""
    config = EnqueueConfig(
        table=settings.table, queue_url=queue_url, max_input_bytes=settings.max_input_bytes
    )
    return build(config, endpoint_url=settings.endpoint_url, region=settings.region)


async def wait_settled(
    worker: WorkerProcess, video_id: str, timeout_s: float
) -> dict[str, dict[str, Any]]:
    """The job's log events by name (first of each), up to and including ``job.settled``."""
    assert worker.tail is not None
    seen: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for event in worker.tail.read():
            if event.get("video_id") == video_id:
                seen.setdefault(str(event.get("event")), event)
        if "job.settled" in seen:
            return seen
        if not worker.alive():
            raise RuntimeError("the worker process exited during the job")
        await asyncio.sleep(0.05)
    raise TimeoutError(f"job {video_id} did not settle within {timeout_s:.0f} s")


def stages(events: dict[str, dict[str, Any]], started_at: float) -> dict[str, float]:
    times = {name: event_time(event) for name, event in events.items()}
    times["start"] = started_at
    return {
        stage: round(times[end] - times[begin], 4)
        for stage, begin, end in STAGES
        if begin in times and end in times
    }


async def _enqueue(bench: Bench, enqueuer: Enqueuer, key: str) -> None:
    head = await bench.clients.s3.head_object(Bucket=bench.settings.bucket, Key=key)
    event = s3_event_for(bench.settings.bucket, key, dict(head), bench.settings.region)
    await asyncio.to_thread(enqueuer.handle, event)


@dataclass(frozen=True, slots=True)
class _Job:
    """What was observed around one job of the worker under test."""

    video_id: str
    key: str
    started_at: float  # epoch seconds of the enqueue
    events: dict[str, dict[str, Any]]
    cpu: TreeCpu
    sampled: Sampled
    emulator_cpu_s: float


async def _observe_job(
    bench: Bench, worker: WorkerProcess, enqueuer: Enqueuer, prep: Prepared, rep: int
) -> _Job:
    video_id = f"{prep.workload.name}-w{rep}-{time.time_ns() % 10**9}"
    key = f"raw/{USER_ID}/{video_id}{prep.workload.path.suffix}"
    await bench.services.storage.upload(prep.workload.path, key)
    bench.emulator.reset_counts()
    sampler = Sampler([bench.settings.scratch_dir], prep.output_names)
    sampler.watch(worker.pid)
    cpu_before, emulator_before = tree_cpu(worker.pid), bench.emulator.cpu()
    started_at = time.time()
    with sampler:
        await _enqueue(bench, enqueuer, key)
        events = await wait_settled(worker, video_id, bench.timeout_s)
    used = tree_cpu(worker.pid) - cpu_before
    emulator_cpu_s = round(bench.emulator.cpu() - emulator_before, 3)
    return _Job(video_id, key, started_at, events, used, sampler.result, emulator_cpu_s)


def _result(prep: Prepared, rep: int, job: _Job) -> RunResult:
    settled = job.events["job.settled"]
    completed = settled.get("outcome") == "completed"
    return RunResult(
        runner="W",
        workload=prep.workload.name,
        rep=rep,
        ok=completed,
        error=None if completed else json.dumps(settled)[:800],
        wall_s=round(event_time(settled) - job.started_at, 4),
        stages_s=stages(job.events, job.started_at),
        first_frame_s=job.sampled.first_output_after(job.started_at),
        python_cpu_s=job.cpu.own_s,
        ffmpeg_cpu_s=job.cpu.children_s,
        peak_python_rss_bytes=job.sampled.peak_python_rss_bytes,
        peak_ffmpeg_rss_bytes=job.sampled.peak_ffmpeg_rss_bytes,
        peak_disk_bytes=job.sampled.peak_disk_bytes,
        files_on_disk=dict(sorted(job.sampled.files_seen.items())),
        emulator_cpu_s=job.emulator_cpu_s,
    )


async def run_w(
    bench: Bench, worker: WorkerProcess, enqueuer: Enqueuer, prep: Prepared, rep: int
) -> RunResult:
    """One job through the worker; its first repetition's renditions are scored for quality."""
    job = await _observe_job(bench, worker, enqueuer, prep, rep)
    result = _result(prep, rep, job)
    started = job.events.get("ffmpeg.started")
    result.source_reads = source_reads(
        bench.emulator.requests(),
        bench.settings.bucket,
        job.key,
        prep.workload.path.stat().st_size,
        event_time(started) if started else None,
    )
    if result.ok:
        result.outputs = await _fetch_and_check(bench, prep, job.video_id, score=rep == 0)
    return result


async def _fetch_and_check(
    bench: Bench, prep: Prepared, video_id: str, *, score: bool
) -> list[Output]:
    local = bench.fresh_dir("w-outputs")
    try:
        paths = {}
        for target in prep.plan.targets:
            paths[target.name] = local / f"{target.name}.mp4"
            key = output_key(target.name, USER_ID, video_id)
            await bench.services.storage.download(key, paths[target.name])
        return await check_outputs(paths, prep, bench.quality if score else None)
    finally:
        remove(local)
