"""The worker loop: receive, claim, run under liveness, settle.

* Receive only when a slot is free (``MaxNumberOfMessages`` = free slots): the visibility clock
  starts at receive, so a message must never wait in memory for a slot.
* Each delivery runs in its own task: the worker gathers what happened to it (``Facts``: parsed or
  not, claimed or not, what the pipeline returned or raised), ``decision.decide`` turns that into
  exactly one ``Outcome``, once, and the ``Settler`` executes it (the DynamoDB write, then the SQS
  action), shielded from cancellation. The outcome's label names the log line and the metric.
* Shutdown: ``stop`` stops receiving; jobs that will finish inside the grace period finish, the
  rest are cancelled (ffmpeg killed) and handed back with visibility 0; ``force`` cancels all.
* ECS scale-in protection (``protection``, see ``transcoder.aws.protection``): while the worker has
  work it is acquired before each receive and renewed by each job's liveness task; a receive that
  comes back empty with nothing running releases it, so an idle task polls unprotected and
  scale-in can stop it; an idle task that receives work protects itself before claiming it.
  Refused: the messages are given back, and nothing is received until the agent grants it.
* Retry policy and the DLQ: see ``transcoder.runtime.decision``.
* Fitness (``transcoder.runtime.fitness``): before each receive the worker checks it can run jobs
  at all; after the probe, that scratch has room for this job. An unfit worker retires: it logs
  ``worker.unfit``, stops receiving, hands back everything it holds at once (a job that failed
  because of it with its receive spared), keeps ``/readyz`` at 503 for the rest of
  ``unfit_exit_after_s``, and ``run`` returns ``EXIT_UNFIT`` for the process to exit with.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

from pydantic import ValidationError

from transcoder import metrics
from transcoder.aws.protection import Unprotected
from transcoder.aws.queue import Delivery
from transcoder.domain.errors import AwsUnavailable, InvalidMessage, LeaseLost, TranscoderError
from transcoder.domain.job import (
    ErrorInfo,
    JobMessage,
    PartsRecord,
    SourceFacts,
    newer_schema,
    raw_ids,
)
from transcoder.domain.transitions import Lease, Refusal
from transcoder.logs import bind_job, clear_job, get_logger
from transcoder.media.progress import Progress
from transcoder.runtime import decision
from transcoder.runtime.decision import Facts, RetryPolicy, error_info
from transcoder.runtime.fitness import Fitness, Unfit
from transcoder.runtime.liveness import (
    Liveness,
    LivenessConfig,
    Renewal,
    lease_horizon_s,
    supervise,
)
from transcoder.runtime.pipeline import PipelineResult, PublishGuard, SourceCallback, Split
from transcoder.runtime.ports import (
    EventsPort,
    JobQueuePort,
    JobStorePort,
    ProtectionPort,
    Sleep,
)
from transcoder.runtime.scratch import ScratchSpace
from transcoder.runtime.settlement import Settler

log = get_logger(__name__)
__all__ = ["EXIT_UNFIT", "Running", "Worker", "WorkerConfig", "parse_message"]
EXIT_UNFIT = 3  # the process's exit code when it retired unfit (ECS / compose replace it)


class PipelinePort(Protocol):
    async def run(
        self,
        message: JobMessage,
        progress: Progress,
        on_source: SourceCallback,
        before_publish: PublishGuard | None = None,
    ) -> PipelineResult | Split: ...

    async def run_part(
        self, message: JobMessage, progress: Progress, before_publish: PublishGuard | None = None
    ) -> list[str]: ...

    async def stitch(
        self,
        message: JobMessage,
        parts: PartsRecord,
        progress: Progress,
        before_publish: PublishGuard | None = None,
    ) -> PipelineResult: ...


@dataclass(frozen=True, slots=True)
class WorkerConfig:
    slots: int
    wait_time_s: int
    visibility_s: int
    shutdown_grace_s: float
    worker_id: str
    bucket: str
    liveness: LivenessConfig
    policy: RetryPolicy
    receive_backoff_base_s: float = 1.0
    receive_backoff_max_s: float = 30.0
    settle_attempts: int = 4
    settle_backoff_s: float = 0.5
    unfit_exit_after_s: float = 15.0  # from worker.unfit to the exit, /readyz saying why


@dataclass
class Running:
    task: asyncio.Task[None]
    progress: Progress = field(default_factory=Progress)


def parse_message(body: str, bucket: str) -> JobMessage:
    """The job in a message body, trusted only as far as it is consistent with this worker.

    Poison (``InvalidMessage``): a body that is not a job message, a bucket that is not the
    worker's, a key outside ``raw/``, or ids that are not the ones the key names.
    """
    try:
        message = JobMessage.model_validate_json(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "body"
        raise InvalidMessage(f"not a job message: {where}: {first['msg']}") from None
    if message.bucket != bucket:
        raise InvalidMessage(f"bucket {message.bucket!r} is not this worker's ({bucket!r})")
    ids = raw_ids(message.key)
    if ids is None:
        raise InvalidMessage(f"key {message.key!r} is not raw/{{userId}}/{{videoId}}.{{ext}}")
    if ids != (message.user_id, message.video_id):
        raise InvalidMessage(
            f"key {message.key!r} names {ids[0]}/{ids[1]}, the message says "
            f"{message.user_id}/{message.video_id}"
        )
    return message


class Worker:
    """Receives jobs and runs up to ``slots`` of them at once."""

    def __init__(
        self,
        config: WorkerConfig,
        queue: JobQueuePort,
        store: JobStorePort,
        pipeline: PipelinePort,
        *,
        health: metrics.Health | None = None,
        renewals: tuple[Renewal, ...] = (),
        rng: random.Random | None = None,
        protection: ProtectionPort | None = None,
        scratch: ScratchSpace | None = None,
        fitness: Fitness | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        events: EventsPort | None = None,
    ) -> None:
        self._config = config
        self._queue = queue
        self._store = store
        self._pipeline = pipeline
        self._health = health or metrics.Health(max_silence_s=config.wait_time_s + 60)
        self._protection: ProtectionPort = protection or Unprotected()
        self._renewals = (*renewals, self._protection.renew)
        self._scratch = scratch
        self._fitness = fitness
        self._retire_at: float | None = None  # when an unfit worker exits
        self._stop, self._force = asyncio.Event(), asyncio.Event()
        self._refused = False  # the agent refused protection last time we asked
        self._rng = rng or random.Random()
        self._monotonic = monotonic
        self._sleep = sleep
        self._running: dict[str, Running] = {}
        self._slot_freed = asyncio.Event()
        self._settler = Settler(
            queue,
            store,
            attempts=config.settle_attempts,
            backoff_s=config.settle_backoff_s,
            sleep=sleep,
            events=events,
        )
        self.settled = self._settler.settled  # recent settlements, for the demo and tests

    # ----------------------------------------------------------------- the loop

    @property
    def unfit(self) -> Unfit | None:
        """Why this worker cannot run jobs (``/readyz`` reports it), or None."""
        return self._fitness.unfit if self._fitness is not None else None

    async def run(self, stop: asyncio.Event, force: asyncio.Event | None = None) -> int:
        """Work until ``stop`` is set, then shut down gracefully (``force`` skips the grace).

        Returns the process's exit code: 0, or ``EXIT_UNFIT`` when the worker retired.
        """
        force = force or asyncio.Event()
        self._stop, self._force = stop, force
        metrics.SLOTS.set(self._config.slots)
        log.info("worker.started", worker_id=self._config.worker_id, slots=self._config.slots)
        try:
            async with self._shutdown_guard(stop, force):
                await self._loop(stop)
        finally:
            await self._protection.release()
            if self._scratch is not None:
                self._scratch.close()
        if self._retire_at is not None:
            await self._sleep(max(0.0, self._retire_at - self._monotonic()))
        code = EXIT_UNFIT if self._retire_at is not None else 0
        log.info("worker.stopped", worker_id=self._config.worker_id, exit_code=code)
        return code

    async def _loop(self, stop: asyncio.Event) -> None:
        failures = 0  # consecutive receives that failed or were refused protection
        while not stop.is_set():
            self._health.beat()
            if not self._fit():
                break
            free = self._config.slots - len(self._running)
            if free <= 0:
                await self._wait_for_slot(stop)
                continue
            deliveries = await self._receive_unless_stopped(free, stop)
            if deliveries is None:
                failures += 1
                delay = self._config.policy.backoff_s(
                    failures,
                    self._config.receive_backoff_base_s,
                    self._config.receive_backoff_max_s,
                    self._rng,
                )
                log.info("worker.backing_off", failures=failures, retry_in_s=delay)
                await self._sleep_unless(stop, delay)
                continue
            failures = 0
            if not deliveries and not self._running:
                await self._protection.release()
            for delivery in deliveries:
                self._start(delivery, stop)

    def _fit(self) -> bool:
        unfit = self._fitness.check() if self._fitness is not None else None
        if unfit is not None:
            self._retire(unfit)
        return unfit is None

    def _retire(self, unfit: Unfit) -> None:
        """Stop receiving and hand back everything now; ``run`` exits after the linger."""
        if self._retire_at is not None:
            return
        self._retire_at = self._monotonic() + self._config.unfit_exit_after_s
        log.error(
            "worker.unfit",
            reason=unfit.reason.value,
            detail=unfit.detail,
            running=len(self._running),
            exit_in_s=self._config.unfit_exit_after_s,
            exit_code=EXIT_UNFIT,
        )
        self._stop.set()
        self._force.set()

    async def _receive_unless_stopped(
        self, free: int, stop: asyncio.Event
    ) -> list[Delivery] | None:
        """``_receive``, cancelled when ``stop`` is set so an idle worker exits at once.

        A long poll can wait ``wait_time_s`` (up to 20 s). What a receive returned before the
        cancellation took effect is kept (the loop gives it back, visible at once); what SQS
        picked in the instant the request was cancelled comes back after its visibility timeout
        (docs/reliability.md, section 3, "Shutdown").
        """
        receive = asyncio.ensure_future(self._receive(free))
        stopping = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait((receive, stopping), return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
            if not receive.done():
                receive.cancel()
            await asyncio.gather(receive, return_exceptions=True)
        if receive.cancelled():
            log.info("queue.receive_cancelled", reason="stopping")
            return []
        return receive.result()

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
        running = Running(task=task, progress=Progress(clock=self._monotonic))
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
        deadline = self._monotonic() + self._config.shutdown_grace_s
        log.info(
            "worker.stopping", running=len(self._running), grace_s=self._config.shutdown_grace_s
        )
        for running in list(self._running.values()):
            eta = running.progress.eta_s()
            if eta is None or self._monotonic() + eta + 5 > deadline:
                log.info("job.interrupting", eta_s=eta)
                running.task.cancel()
        while self._running and not force.is_set() and self._monotonic() < deadline:
            await self._sleep(0.2)
        for running in list(self._running.values()):
            running.task.cancel()

    # ------------------------------------------------------------------ one job

    async def _handle(self, delivery: Delivery) -> None:
        """Gather the facts of one delivery, decide once, execute the outcome."""
        clear_job()
        bind_job(message_id=delivery.message_id, receive_count=delivery.receive_count)
        started = self._monotonic()
        facts = await self._facts(delivery)
        outcome = decision.decide(facts, delivery.receive_count, self._config.policy, self._rng)
        settled = await self._settler.commit(outcome, delivery)
        metrics.JOB_DURATION.labels(settled.label).observe(self._monotonic() - started)
        if isinstance(facts, decision.Interrupted):
            raise asyncio.CancelledError  # the job was handed back; finish the cancellation

    async def _facts(self, delivery: Delivery) -> Facts:
        try:
            return await self._claim_and_run(delivery)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the loop must never die of one job: a bug, retried later
            log.exception("job.crashed")
            return decision.Crashed(error_info(exc))

    async def _claim_and_run(self, delivery: Delivery) -> Facts:
        version = newer_schema(delivery.body)
        if version is not None:
            log.warning("job.newer_schema", version=version)
            return decision.FromNewerProducer(version)
        try:
            message = parse_message(delivery.body, self._config.bucket)
        except InvalidMessage as exc:
            return decision.NotAJob(error_info(exc))
        bind_job(job_id=message.job_id, video_id=message.video_id, trace_id=message.trace_id)
        lease_s = lease_horizon_s(delivery, self._config.visibility_s, self._monotonic())
        try:
            claimed = await self._store.claim(
                message, owner=self._config.worker_id, lease_s=lease_s
            )
        except AwsUnavailable as exc:  # before the claim: nothing to release
            return decision.TableUnreachable(error_info(exc))
        if isinstance(claimed, Refusal):
            return decision.NotClaimed(claimed)
        bind_job(attempt=claimed.attempt)
        if message.part is not None:
            bind_job(part=message.part.index)
        log.info("job.claimed", key=message.key, part=message.part.label if message.part else None)
        return await self._run(delivery, message, claimed)

    async def _run(self, delivery: Delivery, message: JobMessage, lease: Lease) -> Facts:
        running = self._running.get(delivery.message_id)
        progress = running.progress if running else Progress(clock=self._monotonic)
        liveness = Liveness(
            self._queue,
            self._store,
            delivery,
            lease,
            progress,
            self._config.liveness,
            self._renewals,
            monotonic=self._monotonic,
            sleep=self._sleep,
        )

        async def on_source(facts: SourceFacts) -> None:
            await self._store.record_source(lease, facts)
            if self._fitness is not None:
                self._fitness.make_room(facts)

        def confirm() -> Awaitable[None]:
            return self._store.confirm(lease)

        work = (
            self._pipeline.run(message, progress, on_source, before_publish=confirm)
            if message.part is None
            else self._run_part(message, lease, progress, confirm)
        )
        try:
            result = await supervise(work, liveness.watch())
        except asyncio.CancelledError:
            return decision.Interrupted(lease)
        except LeaseLost as exc:
            return decision.LostLease(error_info(exc))
        except Exception as exc:
            return self._failed(lease, exc)
        if self._fitness is not None:
            self._fitness.succeeded()
        if isinstance(result, Split):
            return decision.SplitPlanned(lease, message, result.plan)
        if result is None:
            return decision.PartFinished(lease)
        return decision.Succeeded(lease, result.published)

    async def _run_part(
        self, message: JobMessage, lease: Lease, progress: Progress, confirm: PublishGuard
    ) -> PipelineResult | None:
        """One part: encode and upload it, record it done; the last part done stitches.

        Recorded ``DONE`` under the part's lease (a conditional write): the write that finds
        every part done makes this part the stitcher, once, and this delivery goes on to stitch
        under the same lease and message. A stitcher that died leaves its part ``DONE`` with a
        lapsed lease: its message comes back and is claimed to stitch only (``stitch_only``).
        """
        if not lease.stitch_only:
            await self._pipeline.run_part(message, progress, before_publish=confirm)
        record = await self._store.part_done(lease)
        if record.parts is None or record.parts.stitcher != lease.part:
            return None
        log.info("job.stitching", parts=len(record.parts.states))
        return await self._pipeline.stitch(message, record.parts, progress, before_publish=confirm)

    def _failed(self, lease: Lease, exc: Exception) -> Facts:
        """The job's failure, or this worker's: then it retires and the receive is spared."""
        unfit = self._fitness.unfit if self._fitness and self._fitness.blames(exc) else None
        if unfit is None:
            return decision.Errored(lease, error_info(exc))
        self._retire(unfit)
        message = f"{unfit}; the job's error: {exc}"[:1000]
        error = ErrorInfo(code=unfit.reason, message=message, retryable=True)
        return decision.EnvironmentFailed(lease, error)

    async def _give_back(self, delivery: Delivery) -> None:
        """Received while stopping, or protection refused: visible again at once."""
        outcome = decision.GiveBack(
            decision.Label.HANDED_BACK,
            0,
            resend=delivery.receive_count >= self._config.policy.max_receive_count,
        )
        with contextlib.suppress(TranscoderError):
            await self._settler.commit(outcome, delivery)
