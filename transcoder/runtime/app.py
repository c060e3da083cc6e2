"""Wiring: build the worker and its background services from Settings and clients.

This is the composition root the CLI and the demo share; nothing else constructs adapters.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from aiobotocore.session import get_session
from botocore.exceptions import ClientError

from transcoder import metrics
from transcoder.aws import protection
from transcoder.aws.bus import EventBus
from transcoder.aws.clients import Clients, client_config, translated
from transcoder.aws.queue import MAX_VISIBILITY_S, JobQueue, resolve_url
from transcoder.aws.status import JobStore
from transcoder.aws.storage import Storage
from transcoder.config import Settings
from transcoder.domain.errors import TranscoderError
from transcoder.logs import get_logger
from transcoder.media.ffmpeg import EncodeOptions
from transcoder.runtime.decision import RetryPolicy
from transcoder.runtime.fitness import Fitness, FitnessConfig
from transcoder.runtime.liveness import LivenessConfig
from transcoder.runtime.pipeline import Pipeline, PipelineConfig
from transcoder.runtime.scratch import ScratchSpace
from transcoder.runtime.worker import Worker, WorkerConfig

log = get_logger(__name__)
# A job must fail explicitly before SQS's 12-hour cap on a message's total invisibility.
MAX_JOB_DURATION_S = MAX_VISIBILITY_S - 300


@dataclass(frozen=True, slots=True)
class Services:
    queue: JobQueue
    store: JobStore
    storage: Storage
    events: EventBus | None = None  # job events, when TRANSCODER_EVENT_BUS names a bus


async def connect(clients: Clients, settings: Settings) -> Services:
    queue_url = await resolve_url(clients.sqs, settings.queue)
    try:
        dlq_url: str | None = await resolve_url(clients.sqs, settings.dead_letter_queue)
    except Exception as exc:
        log.warning("dlq.unresolved", queue=settings.dead_letter_queue, error=str(exc))
        dlq_url = None
    return Services(
        queue=JobQueue(clients.sqs, queue_url, dlq_url),
        store=JobStore(clients.dynamodb, settings.table),
        storage=Storage(
            clients.s3,
            settings.bucket,
            multipart_threshold_bytes=settings.multipart_threshold_bytes,
            part_bytes=settings.multipart_part_bytes,
            concurrency=settings.upload_concurrency,
        ),
        events=event_bus(clients, settings),
    )


def event_bus(clients: Clients, settings: Settings) -> EventBus | None:
    if not settings.event_bus or clients.events is None:
        return None
    return EventBus(clients.events, settings.event_bus, timeout_s=settings.event_publish_timeout_s)


def pipeline_config(settings: Settings, scratch_dir: Path | None = None) -> PipelineConfig:
    return PipelineConfig(
        ladder=settings.ladder,
        encode=EncodeOptions(
            preset=settings.x264_preset,
            audio_bitrate_kbps=settings.audio_bitrate_kbps,
            threads=settings.ffmpeg_threads,
        ),
        scratch_dir=scratch_dir or settings.scratch_dir,
        max_input_bytes=settings.max_input_bytes,
        max_input_duration_s=settings.max_input_duration_s,
        max_fps=settings.max_fps,
        gop_s=settings.gop_s,
        presign_ttl_s=settings.presign_ttl_s,
        source_access=settings.source_access,
        ffprobe_timeout_s=settings.ffprobe_timeout_s,
        source_read_timeout_s=settings.source_read_timeout_s,
        hls=settings.hls,
        stills=settings.stills,
        chunking=settings.chunking,
        chunk_s=settings.chunk_s,
        chunk_threshold_s=settings.chunk_threshold_s,
        chunk_postroll_frames=settings.chunk_postroll_frames,
        chunk_warmup_frames=settings.chunk_warmup_frames,
    )


def retry_policy(settings: Settings, max_receive_count: int) -> RetryPolicy:
    return RetryPolicy(
        max_receive_count=max_receive_count,
        visibility_s=settings.visibility_timeout_s,
        retry_base_s=settings.retry_base_s,
        retry_max_s=settings.retry_max_s,
        defer_base_s=settings.defer_base_s,
        defer_max_s=settings.defer_max_s,
        jitter_min=settings.retry_jitter_min,
    )


async def build_worker(
    settings: Settings, services: Services, health: metrics.Health | None = None
) -> Worker:
    max_receive_count = await services.queue.max_receive_count(settings.max_receive_count)
    config = WorkerConfig(
        slots=settings.slots,
        wait_time_s=settings.wait_time_s,
        visibility_s=settings.visibility_timeout_s,
        shutdown_grace_s=settings.shutdown_grace_s,
        worker_id=settings.worker_id,
        bucket=settings.bucket,
        policy=retry_policy(settings, max_receive_count),
        receive_backoff_base_s=settings.receive_backoff_base_s,
        receive_backoff_max_s=settings.receive_backoff_max_s,
        settle_attempts=settings.settle_attempts,
        settle_backoff_s=settings.settle_backoff_s,
        unfit_exit_after_s=settings.unfit_exit_after_s,
        liveness=LivenessConfig(
            visibility_s=settings.visibility_timeout_s,
            interval_s=settings.heartbeat_interval_s,
            stall_timeout_s=settings.stall_timeout_s,
            max_job_duration_s=min(settings.max_job_duration_s, MAX_JOB_DURATION_S),
        ),
    )
    # This process's scratch root; roots left by killed workers on this host are removed now.
    scratch = ScratchSpace.claim(settings.scratch_dir, settings.worker_id)
    scratch.sweep()
    return Worker(
        config,
        services.queue,
        services.store,
        Pipeline(services.storage, pipeline_config(settings, scratch.root)),
        health=health,
        protection=protection.for_agent(
            settings.ecs_agent_uri, expires_s=settings.task_protection_expiry_s
        ),
        scratch=scratch,
        fitness=Fitness(fitness_config(settings), scratch.root),
        events=services.events,
    )


def fitness_config(settings: Settings) -> FitnessConfig:
    audio_kbps = settings.audio_bitrate_kbps
    return FitnessConfig(
        reserve_bytes=settings.scratch_reserve_bytes,
        margin_ratio=settings.scratch_margin_ratio,
        max_environment_failures=settings.max_environment_failures,
        ladder_kbps=sum(rung.maxrate_kbps + audio_kbps for rung in settings.ladder),
        output_copies=2 if settings.hls else 1,
    )


RunningTasks = Callable[[], Awaitable[int]]


@contextlib.asynccontextmanager
async def ecs_running_tasks(settings: Settings) -> AsyncIterator[RunningTasks | None]:
    """The ECS service's running count, when ``TRANSCODER_ECS_CLUSTER``/``_SERVICE`` are set."""
    cluster, service = settings.ecs_cluster, settings.ecs_service
    if not cluster or not service:
        yield None
        return
    config = client_config(settings)
    async with get_session().create_client(
        "ecs", endpoint_url=settings.endpoint_url, config=config
    ) as ecs:

        async def running() -> int:
            with translated("ecs.describe_services"):
                response = await ecs.describe_services(cluster=cluster, services=[service])
            found = response.get("services", [])
            return int(found[0].get("runningCount", 0)) if found else 0

        yield running


async def record_queue_depth(queue: JobQueue, running_tasks: RunningTasks | None = None) -> None:
    """Set the queue gauges (jobs and DLQ) and backlog per task = (visible + in flight) / running
    tasks (1 when the ECS service is not configured). Errors are logged, never raised."""
    try:
        outstanding = 0
        for name, url in (("jobs", queue.url), ("dlq", queue.dlq_url)):
            if url is None:
                continue
            depth = await queue.depth(url)
            metrics.QUEUE_MESSAGES.labels(name, "visible").set(depth.visible)
            metrics.QUEUE_MESSAGES.labels(name, "in_flight").set(depth.in_flight)
            metrics.QUEUE_MESSAGES.labels(name, "delayed").set(depth.delayed)
            if name == "jobs":
                outstanding = depth.visible + depth.in_flight
        tasks = await running_tasks() if running_tasks is not None else 1
    except (TranscoderError, ClientError) as exc:  # a wrong name must not kill the poller
        log.warning("queue.depth_failed", error=str(exc))
        return
    metrics.BACKLOG_PER_TASK.set(outstanding / max(1, tasks))


async def poll_queue_depth(
    queue: JobQueue, interval_s: float, running_tasks: RunningTasks | None = None
) -> None:
    """Keep the queue-depth and backlog gauges current, every ``interval_s``."""
    while True:
        await record_queue_depth(queue, running_tasks)
        await asyncio.sleep(interval_s)


# A readiness probe must answer: a dependency that does not reply in time is not ready.
READINESS_TIMEOUT_S = 5.0


async def _probe(check: Callable[[], Awaitable[object]]) -> str:
    try:
        async with asyncio.timeout(READINESS_TIMEOUT_S):
            await check()
    except TimeoutError:
        return f"error: no answer in {READINESS_TIMEOUT_S:g} s"
    except Exception as exc:
        return f"error: {exc}"
    return "ok"


UnfitReason = Callable[[], object | None]  # the worker's ``unfit``: None, or why it retires


def readiness(services: Services, unfit: UnfitReason | None = None) -> metrics.ReadinessCheck:
    async def check() -> dict[str, str]:
        queue, table = await asyncio.gather(
            _probe(services.queue.depth), _probe(lambda: services.store.get("readyz", "readyz"))
        )
        ffmpeg = "ok" if shutil.which("ffmpeg") and shutil.which("ffprobe") else "missing"
        checks = {"queue": queue, "table": table, "ffmpeg": ffmpeg}
        if unfit is not None:
            reason = unfit()
            checks["worker"] = "ok" if reason is None else f"unfit: {reason}"
        return checks

    return check


@contextlib.asynccontextmanager
async def background(
    settings: Settings,
    services: Services,
    health: metrics.Health,
    unfit: UnfitReason | None = None,
) -> AsyncIterator[metrics.MetricsServer]:
    """The metrics endpoint and the queue-depth poller, cancelled and awaited on exit (also when
    starting the ECS client fails after the endpoint is already listening)."""
    server = metrics.MetricsServer(
        health, readiness(services, unfit), settings.metrics_host, settings.metrics_port
    )
    await server.start()
    try:
        async with ecs_running_tasks(settings) as running_tasks:
            poller = asyncio.create_task(
                poll_queue_depth(services.queue, settings.queue_poll_interval_s, running_tasks)
            )
            log.info("metrics.listening", host=settings.metrics_host, port=server.port)
            try:
                yield server
            finally:
                poller.cancel()
                await asyncio.gather(poller, return_exceptions=True)
    finally:
        await server.stop()
