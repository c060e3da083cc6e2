"""The worker loop: receive, claim, run under liveness, settle.

* Receive only when a slot is free (``MaxNumberOfMessages`` = free slots): the visibility clock
  starts at receive, so a message must never wait in memory for a slot.
* Each job runs in its own task under a liveness watcher; whatever happens, it ends in exactly one
  ``Outcome``, and ``settle`` maps that outcome to the DynamoDB write and the SQS action (the table
  in DESIGN.md; ``transcoder.runtime.settlement``). The same outcome labels the log line and the
  metric.
  Settling is shielded from cancellation: a shutdown never leaves a half-written result.
* Shutdown: ``stop`` stops receiving; jobs that will finish inside the grace period finish, the
  rest are cancelled (ffmpeg killed) and handed back with visibility 0; ``force`` cancels all.
* ECS scale-in protection (``protection``, see ``transcoder.aws.protection``): while the worker has
  work it is acquired before each receive and renewed by each job's liveness task; a receive that
  comes back empty with nothing running releases it, so an idle task polls unprotected and
  scale-in can stop it; an idle task that receives work protects itself before claiming it.
  Refused: the messages are given back, and nothing is received until the agent grants it.
* Retry policy and the DLQ: see ``transcoder.runtime.settlement``.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from pydantic import ValidationError

from transcoder import metrics
from transcoder.aws.protection import Protection, Unprotected
from transcoder.aws.queue import Delivery, JobQueue
from transcoder.aws.status import JobStore, Lease, Verdict, decide_claim
from transcoder.domain.errors import (
    AwsUnavailable,
    InvalidMessage,
    LeaseLost,
    PermanentError,
    TranscoderError,
)
from transcoder.domain.job import JobMessage, SourceFacts
from transcoder.logs import bind_job, clear_job, get_logger
from transcoder.media.progress import Progress
from transcoder.runtime.liveness import (
    Liveness,
    LivenessConfig,
    Renewal,
    lease_horizon_s,
    supervise,
)
from transcoder.runtime.pipeline import Pipeline
from transcoder.runtime.scratch import ScratchSpace
from transcoder.runtime.settlement import (
    Outcome,
    Settlement,
    Settler,
    backoff_s,
    error_info,
    exhausted,
    held_delay_s,
)

log = get_logger(__name__)
# Re-exported: the outcome vocabulary and the retry policy live in transcoder.runtime.settlement.
__all__ = [
    "Outcome",
    "Running",
    "Settlement",
    "Worker",
    "WorkerConfig",
    "backoff_s",
    "error_info",
    "parse_message",
]


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


def parse_message(body: str) -> JobMessage:
    try:
        return JobMessage.model_validate_json(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "body"
        raise InvalidMessage(f"not a job message: {where}: {first['msg']}") from None


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
        protection: Protection | None = None,
        scratch: ScratchSpace | None = None,
    ) -> None:
        self._config = config
        self._queue = queue
        self._store = store
        self._pipeline = pipeline
        self._health = health or metrics.Health(max_silence_s=config.wait_time_s + 60)
        self._protection = protection or Unprotected()
        self._renewals = (*renewals, self._protection.renew)
        self._scratch = scratch
        self._refused = False  # the agent refused protection last time we asked
        self._rng = rng or random.Random()
        self._running: dict[str, Running] = {}
        self._slot_freed = asyncio.Event()
        self._settler = Settler(queue, store, config.max_receive_count)
        self.settled = self._settler.settled  # recent outcomes, for the demo

    # ----------------------------------------------------------------- the loop

    async def run(self, stop: asyncio.Event, force: asyncio.Event | None = None) -> None:
        """Work until ``stop`` is set, then shut down gracefully (``force`` skips the grace)."""
        force = force or asyncio.Event()
        metrics.SLOTS.set(self._config.slots)
        log.info("worker.started", worker_id=self._config.worker_id, slots=self._config.slots)
        try:
            async with self._shutdown_guard(stop, force):
                await self._loop(stop)
        finally:
            await self._protection.release()
            if self._scratch is not None:
                self._scratch.close()
        log.info("worker.stopped", worker_id=self._config.worker_id)

    async def _loop(self, stop: asyncio.Event) -> None:
        failures = 0  # consecutive receives that failed or were refused protection
        while not stop.is_set():
            self._health.beat()
            free = self._config.slots - len(self._running)
            if free <= 0:
                await self._wait_for_slot(stop)
                continue
            deliveries = await self._receive(free)
            if deliveries is None:
                failures += 1
                delay = backoff_s(failures, 1.0, 30.0, self._rng)
                log.info("worker.backing_off", failures=failures, retry_in_s=delay)
                await self._sleep_unless(stop, delay)
                continue
            failures = 0
            if not deliveries and not self._running:
                await self._protection.release()
            for delivery in deliveries:
                self._start(delivery, stop)

    async def _receive(self, free: int) -> list[Delivery] | None:
        """Up to ``free`` messages, under scale-in protection; None when we must back off."""
        if (self._protection.protected or self._refused) and not await self._protect():
            return None
        try:
            deliveries = await self._queue.receive(
                free, wait_s=self._config.wait_time_s, visibility_s=self._config.visibility_s
            )
        except AwsUnavailable as exc:
            log.warning("queue.receive_failed", error=str(exc))
            return None
        if deliveries and not await self._protect():
            await asyncio.gather(*(self._give_back(d) for d in deliveries))
            return None
        return deliveries

    async def _protect(self) -> bool:
        self._refused = not await self._protection.acquire()
        if self._refused:
            log.warning("worker.unprotected", action="not receiving")
        return not self._refused

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
            async with asyncio.timeout(seconds):
                await stop.wait()

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
        lease_s = lease_horizon_s(delivery, self._config.visibility_s, time.monotonic())
        lease = await self._store.claim(
            message, record, owner=self._config.worker_id, lease_s=lease_s
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
                self._pipeline.run(
                    message, progress, on_source, before_publish=lambda: self._store.confirm(lease)
                ),
                liveness.watch(),
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
            spent = exhausted(error, delivery.receive_count)
            return Settlement(Outcome.EXHAUSTED, delivery, lease, error=spent)
        delay = backoff_s(
            delivery.receive_count, self._config.retry_base_s, self._config.retry_max_s, self._rng
        )
        return Settlement(Outcome.RETRY, delivery, lease, error=error, delay_s=delay)

    def _held_delay(self, delivery: Delivery, lease_remaining_s: float) -> int:
        return held_delay_s(
            self._config.visibility_s, delivery.receive_count, lease_remaining_s, self._rng
        )

    async def _give_back(self, delivery: Delivery) -> None:
        with contextlib.suppress(TranscoderError):
            await self._settler.give_back(delivery, 0)

    # ----------------------------------------------------- the one decision point

    async def settle(self, s: Settlement) -> None:
        """Map an outcome to its DynamoDB write and SQS action (``Settler.steps``)."""
        await self._settler.settle(s)

    async def _commit(self, settlement: Settlement) -> Settlement:
        return await self._settler.commit(settlement)
