"""The worker loop and the one place that decides a message's fate.

* Receive only when a slot is free (``MaxNumberOfMessages`` = free slots): the visibility clock
  starts at receive, so a message must never wait in memory for a slot.
* Each job runs in its own task under a liveness watcher; whatever happens, it ends in exactly one
  ``Outcome``, and ``settle`` maps that outcome to the DynamoDB write and the SQS action (the table
  in DESIGN.md). The same outcome labels the log line and the metric. ``settle`` is shielded from
  cancellation: a shutdown never leaves a half-written result.
* Shutdown: ``stop`` stops receiving; jobs that will finish inside the grace period finish, the
  rest are cancelled (ffmpeg killed) and handed back with visibility 0; ``force`` cancels all.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from enum import StrEnum

from pydantic import ValidationError

from transcoder import metrics
from transcoder.errors import (
    AwsUnavailable,
    InvalidMessage,
    LeaseLost,
    PermanentError,
    TranscoderError,
)
from transcoder.job import ErrorInfo, JobMessage, Reason, SourceFacts
from transcoder.liveness import Liveness, LivenessConfig, Renewal, supervise
from transcoder.logs import bind_job, clear_job, get_logger
from transcoder.pipeline import Pipeline, PipelineResult
from transcoder.progress import Progress
from transcoder.queue import MAX_VISIBILITY_S, Delivery, JobQueue
from transcoder.status import JobStore, Lease, Verdict, decide_claim

log = get_logger(__name__)


class Outcome(StrEnum):
    """How a delivery ended; labels ``transcoder_jobs_total`` and the ``job.settled`` log line."""

    COMPLETED = "completed"
    FAILED = "failed"  # permanent: FAILED, delete
    RETRY = "retry"  # retryable: QUEUED, visibility = backoff
    EXHAUSTED = "exhausted"  # retryable but the receive budget is spent: FAILED, on to the DLQ
    HANDED_BACK = "handed_back"  # shutdown: QUEUED, visibility 0
    LEASE_LOST = "lease_lost"  # someone else owns it: touch nothing
    DUPLICATE = "duplicate"  # already COMPLETED (or permanently FAILED): delete
    SUPERSEDED = "superseded"  # a newer upload of the same video owns the record: delete
    HELD = "held"  # another worker holds a live lease: come back later
    DEFERRED = "deferred"  # could not reach the table to claim: come back after a short backoff
    POISON = "poison"  # not a job: straight to the DLQ with the reason


@dataclass(frozen=True, slots=True)
class Settlement:
    outcome: Outcome
    delivery: Delivery
    lease: Lease | None = None
    result: PipelineResult | None = None
    error: ErrorInfo | None = None
    delay_s: int = 0


@dataclass(frozen=True, slots=True)
class WorkerConfig:
    slots: int
    wait_time_s: int
    visibility_s: int
    max_receive_count: int
    retry_base_s: float
    retry_max_s: float
    shutdown_grace_s: float
    worker_id: str
    liveness: LivenessConfig


@dataclass
class Running:
    task: asyncio.Task[None]
    progress: Progress = field(default_factory=Progress)


def backoff_s(receive_count: int, base_s: float, max_s: float, rng: random.Random) -> int:
    """Exponential backoff on the receive count with jitter in [50 %, 100 %] of the step."""
    step = min(max_s, base_s * 2 ** max(0, receive_count - 1))
    return max(1, int(step * rng.uniform(0.5, 1.0)))


def parse_message(body: str) -> JobMessage:
    try:
        return JobMessage.model_validate_json(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "body"
        raise InvalidMessage(f"not a job message: {where}: {first['msg']}") from None


def error_info(exc: BaseException) -> ErrorInfo:
    if isinstance(exc, TranscoderError):
        return ErrorInfo(code=exc.reason, message=str(exc)[:1000], retryable=exc.retryable)
    return ErrorInfo(
        code=Reason.INTERNAL_ERROR, message=f"{type(exc).__name__}: {exc}"[:1000], retryable=True
    )


class Worker:
    """Receives jobs and runs up to ``slots`` of them at once."""

    def __init__(
        self,
        config: WorkerConfig,
        queue: JobQueue,
        store: JobStore,
        pipeline: Pipeline,
        *,
        health: metrics.Health | None = None,
        renewals: tuple[Renewal, ...] = (),
        rng: random.Random | None = None,
    ) -> None:
        self._config = config
        self._queue = queue
        self._store = store
        self._pipeline = pipeline
        self._health = health or metrics.Health(max_silence_s=config.wait_time_s + 60)
        self._renewals = renewals
        self._rng = rng or random.Random()
        self._running: dict[str, Running] = {}
        self._slot_freed = asyncio.Event()
        self.settled: deque[Settlement] = deque(maxlen=1024)  # recent outcomes, for the demo

    # ----------------------------------------------------------------- the loop

    async def run(self, stop: asyncio.Event, force: asyncio.Event | None = None) -> None:
        """Work until ``stop`` is set, then shut down gracefully (``force`` skips the grace)."""
        force = force or asyncio.Event()
        metrics.SLOTS.set(self._config.slots)
        log.info("worker.started", worker_id=self._config.worker_id, slots=self._config.slots)
        async with self._shutdown_guard(stop, force):
            failures = 0
            while not stop.is_set():
                self._health.beat()
                free = self._config.slots - len(self._running)
                if free <= 0:
                    await self._wait_for_slot(stop)
                    continue
                try:
                    deliveries = await self._queue.receive(
                        free,
                        wait_s=self._config.wait_time_s,
                        visibility_s=self._config.visibility_s,
                    )
                    failures = 0
                except AwsUnavailable as exc:
                    failures += 1
                    delay = backoff_s(failures, 1.0, 30.0, self._rng)
                    log.warning("queue.receive_failed", error=str(exc), retry_in_s=delay)
                    await self._sleep_unless(stop, delay)
                    continue
                for delivery in deliveries:
                    self._start(delivery, stop)
        log.info("worker.stopped", worker_id=self._config.worker_id)

    def _start(self, delivery: Delivery, stop: asyncio.Event) -> None:
        if stop.is_set():  # received while stopping: give it straight back
            task = asyncio.create_task(self._give_back(delivery))
        else:
            task = asyncio.create_task(self._handle(delivery))
        running = Running(task=task)
        self._running[delivery.message_id] = running
        metrics.IN_FLIGHT.set(len(self._running))

        def done(_: asyncio.Task[None]) -> None:
            self._running.pop(delivery.message_id, None)
            metrics.IN_FLIGHT.set(len(self._running))
            self._slot_freed.set()

        task.add_done_callback(done)

    async def _wait_for_slot(self, stop: asyncio.Event) -> None:
        self._slot_freed.clear()
        waiters = [
            asyncio.ensure_future(self._slot_freed.wait()),
            asyncio.ensure_future(stop.wait()),
        ]
        try:
            await asyncio.wait(waiters, timeout=5, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()

    @staticmethod
    async def _sleep_unless(stop: asyncio.Event, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=seconds)

    @contextlib.asynccontextmanager
    async def _shutdown_guard(
        self, stop: asyncio.Event, force: asyncio.Event
    ) -> AsyncIterator[None]:
        """Owns the shutdown coordinator; on exit, waits for every job to settle."""
        coordinator = asyncio.create_task(self._coordinate_shutdown(stop, force))
        try:
            yield
            await asyncio.gather(
                *(r.task for r in list(self._running.values())), return_exceptions=True
            )
        finally:
            coordinator.cancel()
            await asyncio.gather(coordinator, return_exceptions=True)
            for running in list(self._running.values()):
                running.task.cancel()
            await asyncio.gather(
                *(r.task for r in list(self._running.values())), return_exceptions=True
            )

    async def _coordinate_shutdown(self, stop: asyncio.Event, force: asyncio.Event) -> None:
        await stop.wait()
        deadline = time.monotonic() + self._config.shutdown_grace_s
        log.info(
            "worker.stopping", running=len(self._running), grace_s=self._config.shutdown_grace_s
        )
        for running in list(self._running.values()):
            eta = running.progress.eta_s()
            if eta is None or time.monotonic() + eta + 5 > deadline:
                log.info("job.interrupting", eta_s=eta)
                running.task.cancel()
        while self._running and not force.is_set() and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.2)
        for running in list(self._running.values()):
            running.task.cancel()

    # ------------------------------------------------------------------ one job

    async def _handle(self, delivery: Delivery) -> None:
        clear_job()
        bind_job(message_id=delivery.message_id, receive_count=delivery.receive_count)
        started = time.monotonic()
        try:
            settlement = await self._process(delivery)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the loop must never die of one job: retry it later
            log.exception("job.crashed")
            delay = backoff_s(delivery.receive_count, 5.0, 120.0, self._rng)
            settlement = await self._commit(
                Settlement(Outcome.DEFERRED, delivery, error=error_info(exc), delay_s=delay)
            )
        metrics.JOB_DURATION.labels(settlement.outcome).observe(time.monotonic() - started)

    async def _process(self, delivery: Delivery) -> Settlement:
        try:
            message = parse_message(delivery.body)
        except PermanentError as exc:
            return await self._commit(Settlement(Outcome.POISON, delivery, error=error_info(exc)))
        bind_job(job_id=message.job_id, video_id=message.video_id, trace_id=message.trace_id)
        try:
            return await self._claim_and_run(delivery, message)
        except AwsUnavailable as exc:  # before the claim: nothing to release
            delay = backoff_s(delivery.receive_count, 5.0, 120.0, self._rng)
            settlement = Settlement(
                Outcome.DEFERRED, delivery, error=error_info(exc), delay_s=delay
            )
            return await self._commit(settlement)

    async def _claim_and_run(self, delivery: Delivery, message: JobMessage) -> Settlement:
        record = await self._store.get(message.user_id, message.video_id)
        decision = decide_claim(record, message, time.time())
        if decision.verdict is not Verdict.CLAIM:
            outcome = {
                Verdict.DUPLICATE: Outcome.DUPLICATE,
                Verdict.ALREADY_FAILED: Outcome.DUPLICATE,
                Verdict.SUPERSEDED: Outcome.SUPERSEDED,
                Verdict.HELD: Outcome.HELD,
            }[decision.verdict]
            delay = self._held_delay(delivery, decision.lease_remaining_s)
            return await self._commit(Settlement(outcome, delivery, delay_s=delay))
        lease = await self._store.claim(
            message, record, owner=self._config.worker_id, lease_s=self._config.visibility_s
        )
        if lease is None:
            delay = self._held_delay(delivery, self._config.visibility_s)
            return await self._commit(Settlement(Outcome.HELD, delivery, delay_s=delay))
        bind_job(attempt=lease.attempt)
        log.info("job.claimed", key=message.key)
        return await self._commit(await self._run(delivery, message, lease))

    async def _run(self, delivery: Delivery, message: JobMessage, lease: Lease) -> Settlement:
        running = self._running.get(delivery.message_id)
        progress = running.progress if running else Progress()
        liveness = Liveness(
            self._queue,
            self._store,
            delivery,
            lease,
            progress,
            self._config.liveness,
            self._renewals,
        )

        async def on_source(facts: SourceFacts) -> None:
            await self._store.record_source(lease, facts)

        try:
            result = await supervise(
                self._pipeline.run(message, progress, on_source), liveness.watch()
            )
        except asyncio.CancelledError:
            await self._commit(Settlement(Outcome.HANDED_BACK, delivery, lease))
            raise
        except LeaseLost as exc:
            return Settlement(Outcome.LEASE_LOST, delivery, lease, error=error_info(exc))
        except Exception as exc:
            return self._failure(delivery, lease, exc)
        return Settlement(Outcome.COMPLETED, delivery, lease, result=result)

    def _failure(self, delivery: Delivery, lease: Lease, exc: Exception) -> Settlement:
        error = error_info(exc)
        if not error.retryable:
            return Settlement(Outcome.FAILED, delivery, lease, error=error)
        if delivery.receive_count >= self._config.max_receive_count:
            exhausted = ErrorInfo(
                code=Reason.RETRIES_EXHAUSTED,
                message=f"gave up after {delivery.receive_count} attempts; last: "
                f"{error.code}: {error.message}"[:1000],
                retryable=True,
            )
            return Settlement(Outcome.EXHAUSTED, delivery, lease, error=exhausted)
        delay = backoff_s(
            delivery.receive_count, self._config.retry_base_s, self._config.retry_max_s, self._rng
        )
        return Settlement(Outcome.RETRY, delivery, lease, error=error, delay_s=delay)

    def _held_delay(self, delivery: Delivery, lease_remaining_s: float) -> int:
        step = self._config.visibility_s * 2 ** max(0, delivery.receive_count - 1)
        return int(
            min(MAX_VISIBILITY_S - 600, lease_remaining_s + step * self._rng.uniform(0.1, 0.3))
        )

    async def _give_back(self, delivery: Delivery) -> None:
        with contextlib.suppress(TranscoderError):
            await self._queue.set_visibility(delivery, 0)

    # ----------------------------------------------------- the one decision point

    async def _commit(self, settlement: Settlement) -> Settlement:
        """Apply ``settle`` shielded from cancellation, retrying transient AWS errors briefly."""
        task = asyncio.ensure_future(self._settle_with_retries(settlement))
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            await task
            raise

    async def _settle_with_retries(self, settlement: Settlement) -> Settlement:
        for attempt in range(4):
            try:
                await self.settle(settlement)
                break
            except LeaseLost as exc:
                settlement = Settlement(
                    Outcome.LEASE_LOST, settlement.delivery, settlement.lease, error=error_info(exc)
                )
            except AwsUnavailable as exc:
                log.warning("job.settle_retry", outcome=settlement.outcome, error=str(exc))
                if attempt == 3:
                    log.error("job.settle_failed", outcome=settlement.outcome, error=str(exc))
                    break
                await asyncio.sleep(0.5 * 2**attempt)
        self._record(settlement)
        return settlement

    async def settle(self, s: Settlement) -> None:
        """Map an outcome to its DynamoDB write and SQS action (DESIGN.md, message fate)."""
        match s.outcome:
            case Outcome.COMPLETED:
                assert s.lease and s.result
                await self._store.mark_completed(s.lease, s.result.renditions)
                await self._queue.delete(s.delivery)
            case Outcome.FAILED:
                assert s.lease and s.error
                await self._store.mark_failed(s.lease, s.error)
                await self._queue.delete(s.delivery)
            case Outcome.RETRY:
                assert s.lease
                await self._store.release(s.lease, s.error)
                await self._queue.set_visibility(s.delivery, s.delay_s)
            case Outcome.EXHAUSTED:
                assert s.lease and s.error
                await self._store.mark_failed(s.lease, s.error)
                await self._queue.set_visibility(s.delivery, 0)  # the next receive dead-letters it
            case Outcome.HANDED_BACK:
                assert s.lease
                await self._store.release(s.lease, None)
                await self._queue.set_visibility(s.delivery, 0)
            case Outcome.DUPLICATE | Outcome.SUPERSEDED:
                await self._queue.delete(s.delivery)
            case Outcome.HELD | Outcome.DEFERRED:
                await self._queue.set_visibility(s.delivery, s.delay_s)
            case Outcome.POISON:
                assert s.error
                await self._queue.dead_letter(
                    s.delivery, reason=s.error.code, detail=s.error.message
                )
            case Outcome.LEASE_LOST:
                pass

    def _record(self, s: Settlement) -> None:
        self.settled.append(s)
        metrics.JOBS.labels(s.outcome).inc()
        fields: dict[str, object] = {"outcome": s.outcome.value}
        if s.error:
            fields.update(code=s.error.code, error=s.error.message, retryable=s.error.retryable)
        if s.delay_s:
            fields["visible_in_s"] = s.delay_s
        if s.result:
            fields["renditions"] = {n: r.status for n, r in s.result.renditions.items()}
        level = (
            "warning" if s.outcome in (Outcome.RETRY, Outcome.EXHAUSTED, Outcome.POISON) else "info"
        )
        getattr(log, level)("job.settled", **fields)
