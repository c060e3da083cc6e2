"""Executes a decided outcome: the record write, then the queue action. It decides nothing.

``Settler.steps`` maps each ``Outcome`` type (``transcoder.runtime.decision``) to its DynamoDB
write and SQS action, in that order; ``commit`` applies them shielded from cancellation, so a
shutdown never leaves a half-written result, and labels the ``job.settled`` log line and
``transcoder_jobs_total`` with the outcome's label; a retry (``Retry``, ``Backoff``, ``GiveBack``)
also counts in ``transcoder_retries_total`` by its cause (the error's reason code).

What execution can still find out, and how it is reported (nothing is re-decided):

* the record write is refused because the lease moved on (``LeaseLost`` before any step ran):
  nothing else is done and the settlement is logged as ``lease_lost``;
* a queue step is refused after the record was written (the receipt handle expired): the
  record stands and the redelivery is acknowledged then (``job.ack_refused``);
* transient AWS errors: each step is retried from where it failed, ``settle_attempts`` times with
  exponential backoff from ``settle_backoff_s``, on top of the SDK's own ``max_attempts`` per call
  (docs/reliability.md, "Retries, layered").

The job event (``events``, when a bus is configured): once a ``Completed`` or ``Failed`` outcome's
record write has succeeded, the record it stored is published (``transcoder.aws.bus``), after the
queue action, inside the same shielded task, so a shutdown neither skips it nor cuts it short. The
publisher bounds itself (``event_publish_timeout_s``) and never raises; nothing is published when
the write was refused or never landed (the redelivery's attempt will publish).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial

from transcoder import metrics
from transcoder.aws.queue import Delivery
from transcoder.domain.errors import AwsUnavailable, LeaseLost
from transcoder.domain.job import JobMessage, PartsRecord, PartStatus
from transcoder.domain.record import JobRecord
from transcoder.domain.transitions import Lease
from transcoder.logs import get_logger
from transcoder.runtime.decision import (
    Acknowledge,
    Backoff,
    Completed,
    Failed,
    FanOut,
    GiveBack,
    HandedBack,
    Label,
    Outcome,
    Poison,
    Retry,
    error_info,
)
from transcoder.runtime.decision import (
    LeaseLost as LeaseLostOutcome,
)
from transcoder.runtime.ports import EventsPort, JobQueuePort, JobStorePort

log = get_logger(__name__)
Step = Callable[[], Awaitable[object]]  # a final record write returns the record it stored
SEND_AT_ONCE = 10  # part messages in flight at once while a job fans out
WARNING_LABELS = frozenset({Label.RETRY, Label.EXHAUSTED, Label.POISON})
RETRIES = (Retry, Backoff, GiveBack)  # the outcomes counted by cause in transcoder_retries_total


@dataclass(frozen=True, slots=True)
class Settled:
    """One delivery's settlement as it was executed (``label`` is what was logged)."""

    label: Label
    outcome: Outcome
    delivery: Delivery
    record: JobRecord | None = None  # what a final write (COMPLETED / FAILED) stored


class Settler:
    """Executes outcomes for one worker and remembers the recent ones."""

    def __init__(
        self,
        queue: JobQueuePort,
        store: JobStorePort,
        *,
        attempts: int = 4,
        backoff_s: float = 0.5,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        events: EventsPort | None = None,
    ) -> None:
        self._queue = queue
        self._store = store
        self._events = events
        self._attempts = attempts
        self._backoff_s = backoff_s
        self._sleep = sleep
        self.settled: deque[Settled] = deque(maxlen=1024)  # recent outcomes, for the demo

    async def commit(self, outcome: Outcome, delivery: Delivery) -> Settled:
        """Execute ``outcome`` shielded from cancellation; a cancel waits for it, then re-raises."""
        task = asyncio.ensure_future(self._settle(outcome, delivery))
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            await task
            raise

    async def _settle(self, outcome: Outcome, delivery: Delivery) -> Settled:
        settled = await self._execute(outcome, delivery)
        if settled.record is not None and self._events is not None:
            await self._events.publish(settled.record)
        return settled

    def steps(self, outcome: Outcome, d: Delivery) -> tuple[Step, ...]:
        """An outcome's DynamoDB write, then its SQS action (DESIGN.md, message fate)."""
        q, store = self._queue, self._store
        match outcome:
            case Completed(lease, published):
                return partial(store.mark_completed, lease, published), partial(q.delete, d)
            case FanOut(lease, message, plan):
                return partial(self._fan_out, lease, message, plan), partial(q.delete, d)
            case Failed(lease, error, to_dlq):
                fail = partial(store.mark_failed, lease, error)
                # Exhausted: visible at once, so the next receive makes SQS dead-letter it.
                return fail, partial(q.set_visibility, d, 0) if to_dlq else partial(q.delete, d)
            case Retry(lease, error, delay_s):
                return partial(store.release, lease, error), partial(q.set_visibility, d, delay_s)
            case HandedBack(lease, resend, error):
                return partial(store.release, lease, error), self._give_back(d, 0, resend)
            case GiveBack(_, delay_s, resend):
                return (self._give_back(d, delay_s, resend),)
            case Backoff(_, delay_s):
                return (partial(q.set_visibility, d, delay_s),)
            case Acknowledge():
                return (partial(q.delete, d),)
            case Poison(error):
                return (partial(q.dead_letter, d, reason=error.code, detail=error.message),)
            case LeaseLostOutcome():
                return ()

    async def _fan_out(self, lease: Lease, message: JobMessage, plan: PartsRecord) -> None:
        """Record the parts, send every part's message, then hand the job to its parts.

        Idempotent, so a retry after a failed send repeats it: the plan already recorded is kept
        and a part sent twice is claimed once (its duplicate is acknowledged). Should this worker
        die before ``fanned_out``, the job's own message comes back and sends them again.
        """
        record = await self._store.split(lease, plan)
        parts = record.parts or plan
        pending = [i for i, s in enumerate(parts.states) if s.status is not PartStatus.DONE]
        for start in range(0, len(pending), SEND_AT_ONCE):
            batch = pending[start : start + SEND_AT_ONCE]
            await asyncio.gather(
                *(
                    self._queue.send(message.for_part(parts.part(i)).model_dump_json())
                    for i in batch
                )
            )
        await self._store.fanned_out(lease)
        log.info("job.fanned_out", parts=len(parts.states), sent=len(pending))

    def _give_back(self, delivery: Delivery, delay_s: int, resend: bool) -> Step:
        if resend:
            return partial(self._resend, delivery, delay_s)
        return partial(self._queue.set_visibility, delivery, delay_s)

    async def _resend(self, delivery: Delivery, delay_s: int) -> None:
        message_id = await self._queue.requeue(delivery, delay_s=delay_s)
        log.info("job.requeued", new_message_id=message_id, visible_in_s=delay_s)

    async def _execute(self, outcome: Outcome, delivery: Delivery) -> Settled:
        """Apply the steps in order; a retry after a transient error resumes at the failed step."""
        steps, done, label = self.steps(outcome, delivery), 0, outcome.label
        written: JobRecord | None = None
        for attempt in range(self._attempts):
            try:
                while done < len(steps):
                    result = await steps[done]()
                    if isinstance(result, JobRecord) and isinstance(outcome, Completed | Failed):
                        written = result
                    done += 1
                break
            except LeaseLost as exc:
                if done == 0:  # the fenced write was refused: nothing was written
                    label = Label.LEASE_LOST
                    outcome = LeaseLostOutcome(error_info(exc))
                else:
                    log.warning("job.ack_refused", outcome=outcome.label, error=str(exc))
                break
            except AwsUnavailable as exc:
                log.warning("job.settle_retry", outcome=outcome.label, error=str(exc))
                if attempt == self._attempts - 1:
                    log.error("job.settle_failed", outcome=outcome.label, error=str(exc))
                    break
                await self._sleep(self._backoff_s * 2**attempt)
        settled = Settled(label, outcome, delivery, written)
        self._record(settled)
        return settled

    def _record(self, s: Settled) -> None:
        self.settled.append(s)
        metrics.JOBS.labels(s.label).inc()
        fields: dict[str, object] = {"outcome": s.label.value}
        error = getattr(s.outcome, "error", None)
        if isinstance(s.outcome, RETRIES):
            cause = error.code if error is not None else s.label.value
            metrics.RETRIES.labels(cause=cause, outcome=s.label.value).inc()
        if error is not None:
            fields.update(code=error.code, error=error.message, retryable=error.retryable)
        delay_s = getattr(s.outcome, "delay_s", 0)
        if delay_s:
            fields["visible_in_s"] = delay_s
        if isinstance(s.outcome, Completed):
            fields["renditions"] = {n: r.status for n, r in s.outcome.published.renditions.items()}
        level = "warning" if s.label in WARNING_LABELS else "info"
        getattr(log, level)("job.settled", **fields)
