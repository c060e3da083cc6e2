"""The control-plane run: many one-second jobs through the real worker, in process, one slot.

Per-job overhead is receive-to-delete minus the time ffmpeg ran. The real ``Worker`` is built by
``transcoder.runtime.app`` exactly as the CLI builds it; only observation is added:

* its ``JobQueue`` is a subclass that stamps when each message was received and deleted;
* ``transcoder.media.encoder.run`` and ``transcoder.media.probe.run`` are wrapped
  (``mock.patch.object``)
  to record when each ffmpeg and ffprobe ran.

With one slot, jobs run one after another, so every ffmpeg span falls inside exactly one job's
receive-to-delete window. The jobs are enqueued through the real enqueue handler (one S3 event
carrying every upload) before the worker starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar
from unittest import mock

from benchmarks.context import Bench
from benchmarks.model import ControlPlane
from benchmarks.worker_runner import enqueuer_for
from enqueue_lambda.handler import s3_event_for
from samples.workloads import Workload
from transcoder import logs
from transcoder.aws.queue import Delivery, JobQueue
from transcoder.config import Settings
from transcoder.media import encoder, probe
from transcoder.ops.bootstrap import bootstrap
from transcoder.runtime import app

T = TypeVar("T")
Span = tuple[float, float]


class TimedQueue(JobQueue):
    """The production queue adapter, stamping receive and delete times per message."""

    def __init__(self, base: JobQueue, client: Any, expected: int) -> None:
        super().__init__(client, base.url, base.dlq_url)
        self.received: dict[str, float] = {}
        self.deleted: dict[str, float] = {}
        self.expected = expected
        self.all_deleted = asyncio.Event()

    async def receive(self, max_messages: int, *, wait_s: int, visibility_s: int) -> list[Delivery]:
        deliveries = await super().receive(max_messages, wait_s=wait_s, visibility_s=visibility_s)
        now = time.monotonic()
        for delivery in deliveries:
            self.received.setdefault(delivery.message_id, now)
        return deliveries

    async def delete(self, delivery: Delivery) -> None:
        await super().delete(delivery)
        self.deleted[delivery.message_id] = time.monotonic()
        if len(self.deleted) >= self.expected:
            self.all_deleted.set()


def _timed(func: Callable[..., Awaitable[T]], spans: list[Span]) -> Callable[..., Awaitable[T]]:
    async def wrapper(*args: Any, **kwargs: Any) -> T:
        started = time.monotonic()
        try:
            return await func(*args, **kwargs)
        finally:
            spans.append((started, time.monotonic()))

    return wrapper


@contextlib.contextmanager
def _observed(ffmpeg: list[Span], ffprobe: list[Span]) -> Iterator[None]:
    with (
        mock.patch.object(encoder, "run", _timed(encoder.run, ffmpeg)),
        mock.patch.object(probe, "run", _timed(probe.run, ffprobe)),
    ):
        yield


def _inside(spans: list[Span], start: float, end: float) -> float:
    return sum(b - a for a, b in spans if a >= start and b <= end)


def overheads(
    received_at: dict[str, float],
    deleted_at: dict[str, float],
    ffmpeg: list[Span],
    ffprobe: list[Span],
) -> tuple[list[float], list[float], list[float], list[float]]:
    """(overhead, overhead without ffprobe, ffmpeg, ffprobe) in ms for each deleted message."""
    rows: tuple[list[float], list[float], list[float], list[float]] = ([], [], [], [])
    for message_id, deleted in deleted_at.items():
        received = received_at.get(message_id)
        if received is None:
            continue
        encode = _inside(ffmpeg, received, deleted)
        probing = _inside(ffprobe, received, deleted)
        window = deleted - received
        for column, value in zip(
            rows, (window - encode, window - encode - probing, encode, probing), strict=True
        ):
            column.append(round(value * 1000, 2))
    return rows


def _settings(bench: Bench) -> Settings:
    token = secrets.token_hex(3)
    return bench.settings.model_copy(
        update={
            "queue": f"bench-cp-{token}",
            "dead_letter_queue": f"bench-cp-dlq-{token}",
            "table": f"bench-cp-{token}",
            "wait_time_s": 1,
            "scratch_dir": bench.work_dir / "control-plane-scratch",
            "worker_id": f"bench-cp-{token}",
        }
    )


async def _enqueue_all(
    bench: Bench, settings: Settings, services: app.Services, clip: Workload, jobs: int
) -> None:
    records: list[Any] = []
    for index in range(jobs):
        key = f"raw/cp/job-{index:04d}{clip.path.suffix}"
        await services.storage.upload(clip.path, key)
        head = await bench.clients.s3.head_object(Bucket=settings.bucket, Key=key)
        records += s3_event_for(settings.bucket, key, dict(head), settings.region)["Records"]
    enqueuer = enqueuer_for(settings, services.queue.url)
    await asyncio.to_thread(enqueuer.handle, {"Records": records})


async def run_control_plane(bench: Bench, clip: Workload, jobs: int) -> ControlPlane:
    """Run ``jobs`` copies of ``clip`` through one in-process worker slot."""
    settings = _settings(bench)
    await bootstrap(bench.clients, settings)
    services = await app.connect(bench.clients, settings)
    bench.display.begin(f"control plane: uploading and enqueueing {jobs} jobs")
    await _enqueue_all(bench, settings, services, clip, jobs)
    queue = TimedQueue(services.queue, bench.clients.sqs, jobs)
    worker = await app.build_worker(settings, app.Services(queue, services.store, services.storage))
    ffmpeg: list[Span] = []
    ffprobe: list[Span] = []
    logs.configure("warning", json=True)  # the worker's info lines would bury the display
    bench.display.begin(f"control plane: {jobs} one-second jobs, one worker slot")
    started = time.monotonic()
    stop = asyncio.Event()
    with _observed(ffmpeg, ffprobe):
        task = asyncio.create_task(worker.run(stop))
        done = asyncio.ensure_future(queue.all_deleted.wait())
        await asyncio.wait(
            {task, done}, timeout=bench.timeout_s + jobs * 30, return_when=asyncio.FIRST_COMPLETED
        )
        done.cancel()
        stop.set()
        await task
    wall_s = time.monotonic() - started
    overhead, without_probe, encode, probing = overheads(
        queue.received, queue.deleted, ffmpeg, ffprobe
    )
    completed = sum(1 for s in worker.settled if s.label.value == "completed")
    return ControlPlane(
        jobs=jobs,
        completed=completed,
        wall_s=round(wall_s, 3),
        overhead_ms=tuple(overhead),
        without_probe_ms=tuple(without_probe),
        ffmpeg_ms=tuple(encode),
        ffprobe_ms=tuple(probing),
    )
