"""A message's fate: outcomes, the retry policy, and the one mapping to DynamoDB and SQS actions.

Every delivery ends in exactly one ``Outcome``; ``Settler.steps`` maps it to the record write and
the queue action (the table in DESIGN.md), and the same outcome labels the ``job.settled`` log
line and ``transcoder_jobs_total``. ``Settler.commit`` applies the steps shielded from
cancellation, so a shutdown never leaves a half-written result.

Retry policy:

* a retryable failure makes the message visible again after ``backoff_s`` (exponential in
  ``ApproximateReceiveCount``, jittered); a permanent one is recorded and deleted at once, so it
  never spends a retry;
* the last allowed receive (``maxReceiveCount``) of a failing job marks it ``FAILED``
  (``retries_exhausted``, naming the last cause) and makes the message visible: the next receive
  makes SQS move it to the DLQ;
* give-backs that are not the job's fault (shutdown, a live lease elsewhere, the table
  unreachable, protection refused) never push a message into the DLQ: on the last allowed receive
  the message is re-sent as a new one (receive count back to 1) instead of made visible again.
"""

from __future__ import annotations

import asyncio
import random
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum
from functools import partial

from transcoder import metrics
from transcoder.aws.queue import MAX_VISIBILITY_S, Delivery, JobQueue
from transcoder.aws.status import JobStore, Lease
from transcoder.domain.errors import AwsUnavailable, LeaseLost, TranscoderError
from transcoder.domain.job import ErrorInfo, Reason
from transcoder.logs import get_logger
from transcoder.runtime.pipeline import PipelineResult

log = get_logger(__name__)
Step = Callable[[], Awaitable[None]]


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


def backoff_s(receive_count: int, base_s: float, max_s: float, rng: random.Random) -> int:
    """Exponential backoff on the receive count with jitter in [50 %, 100 %] of the step."""
    step = min(max_s, base_s * 2 ** max(0, receive_count - 1))
    return max(1, int(step * rng.uniform(0.5, 1.0)))


def held_delay_s(
    visibility_s: int, receive_count: int, lease_remaining_s: float, rng: random.Random
) -> int:
    """Come back once the holder's lease has run out, plus a growing jittered step."""
    step = visibility_s * 2 ** max(0, receive_count - 1)
    return int(min(MAX_VISIBILITY_S - 600, lease_remaining_s + step * rng.uniform(0.1, 0.3)))


def spares_receive(s: Settlement) -> bool:
    """Give-backs that are not the job's fault must not move it towards the DLQ."""
    if s.outcome in (Outcome.HANDED_BACK, Outcome.HELD):
        return True
    return s.outcome is Outcome.DEFERRED and (
        s.error is None or s.error.code == Reason.AWS_UNAVAILABLE
    )


def error_info(exc: BaseException) -> ErrorInfo:
    if isinstance(exc, TranscoderError):
        return ErrorInfo(code=exc.reason, message=str(exc)[:1000], retryable=exc.retryable)
    return ErrorInfo(
        code=Reason.INTERNAL_ERROR, message=f"{type(exc).__name__}: {exc}"[:1000], retryable=True
    )


def exhausted(error: ErrorInfo, receive_count: int) -> ErrorInfo:
    """The error of a job whose last allowed receive failed too; it names the last cause."""
    message = f"gave up after {receive_count} attempts; last: {error.code}: {error.message}"
    return ErrorInfo(code=Reason.RETRIES_EXHAUSTED, message=message[:1000], retryable=True)


class Settler:
    """Applies settlements for one worker and remembers the recent ones."""

    def __init__(self, queue: JobQueue, store: JobStore, max_receive_count: int) -> None:
        self._queue = queue
        self._store = store
        self._max_receive_count = max_receive_count
        self.settled: deque[Settlement] = deque(maxlen=1024)  # recent outcomes, for the demo

    async def commit(self, settlement: Settlement) -> Settlement:
        """Apply the settlement shielded from cancellation, retrying transient AWS errors."""
        task = asyncio.ensure_future(self._apply_with_retries(settlement))
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            await task
            raise

    async def settle(self, s: Settlement) -> None:
        """Apply an outcome's DynamoDB write, then its SQS action."""
        for step in self.steps(s):
            await step()

    def steps(self, s: Settlement) -> tuple[Step, ...]:
        """Map an outcome to its DynamoDB write and SQS action (DESIGN.md, message fate)."""
        q, store, d = self._queue, self._store, s.delivery
        match s.outcome:
            case Outcome.COMPLETED:
                assert s.lease and s.result
                completed = partial(store.mark_completed, s.lease, s.result.renditions)
                return completed, partial(q.delete, d)
            case Outcome.FAILED:
                assert s.lease and s.error
                return partial(store.mark_failed, s.lease, s.error), partial(q.delete, d)
            case Outcome.RETRY:
                assert s.lease
                released = partial(store.release, s.lease, s.error)
                return released, partial(q.set_visibility, d, s.delay_s)
            case Outcome.EXHAUSTED:  # the next receive makes SQS move it to the DLQ
                assert s.lease and s.error
                return partial(store.mark_failed, s.lease, s.error), partial(q.set_visibility, d, 0)
            case Outcome.HANDED_BACK:
                assert s.lease
                return partial(store.release, s.lease, None), partial(self.give_back, d, 0)
            case Outcome.DUPLICATE | Outcome.SUPERSEDED:
                return (partial(q.delete, d),)
            case Outcome.HELD | Outcome.DEFERRED if spares_receive(s):
                return (partial(self.give_back, d, s.delay_s),)
            case Outcome.HELD | Outcome.DEFERRED:
                return (partial(q.set_visibility, d, s.delay_s),)
            case Outcome.POISON:
                assert s.error
                return (partial(q.dead_letter, d, reason=s.error.code, detail=s.error.message),)
            case Outcome.LEASE_LOST:
                return ()

    async def give_back(self, delivery: Delivery, delay_s: int = 0) -> None:
        """Make the message visible again in ``delay_s``, without spending the last receive."""
        if delivery.receive_count >= self._max_receive_count:
            message_id = await self._queue.requeue(delivery, delay_s=delay_s)
            log.info("job.requeued", new_message_id=message_id, visible_in_s=delay_s)
        else:
            await self._queue.set_visibility(delivery, delay_s)

    async def _apply_with_retries(self, settlement: Settlement) -> Settlement:
        """Apply the steps in order; a retry after a transient error resumes at the failed step.

        ``LeaseLost`` before anything was applied means the fenced write was refused: nothing
        is written and the outcome becomes ``LEASE_LOST``. After the record was written the
        outcome stands; a refused SQS step is left to the redelivery (acknowledged then).
        """
        steps, done = self.steps(settlement), 0
        for attempt in range(4):
            try:
                while done < len(steps):
                    await steps[done]()
                    done += 1
                break
            except LeaseLost as exc:
                if done == 0:
                    delivery, lease = settlement.delivery, settlement.lease
                    error = error_info(exc)
                    settlement = Settlement(Outcome.LEASE_LOST, delivery, lease, error=error)
                else:
                    log.warning("job.ack_refused", outcome=settlement.outcome, error=str(exc))
                break
            except AwsUnavailable as exc:
                log.warning("job.settle_retry", outcome=settlement.outcome, error=str(exc))
                if attempt == 3:
                    log.error("job.settle_failed", outcome=settlement.outcome, error=str(exc))
                    break
                await asyncio.sleep(0.5 * 2**attempt)
        self._record(settlement)
        return settlement

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
