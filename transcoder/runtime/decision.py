"""A delivery's fate, decided once: what happened (``Facts``) -> one typed ``Outcome``.

``decide`` is pure: the worker gathers the facts of one delivery (did it parse, was it claimed,
what did the pipeline return or raise), and ``decide`` maps them, with the receive count and the
retry policy, to exactly one outcome. ``transcoder.runtime.settlement`` only executes outcomes.

==================  ================================================  ==============================
facts               outcome                                           DynamoDB / SQS
==================  ================================================  ==============================
not a job           ``Poison``                                        - / to the DLQ with the reason
newer producer      ``GiveBack(postponed)``                           - / back later, receive spared
table unreachable   ``GiveBack(deferred)``; ``Backoff`` for aws_error  - / back soon, receive spared
not claimed         ``Acknowledge`` (duplicate, superseded) or        - / delete;
                    ``GiveBack(held)``                                - / back when the lease ends
ran, succeeded      ``Completed``                                     COMPLETED / delete
planned as parts    ``FanOut``                                        parts / send each part's
                                                                      message, then delete
a part done         ``Acknowledge(part_done)`` (not the stitcher)     (written) / delete
ran, permanent      ``Failed``                                        FAILED / delete
ran, retryable      ``Retry``; ``Exhausted`` on the last receive      QUEUED / backoff;
                                                                      FAILED / visible: to the DLQ
lease lost          ``LeaseLost``                                     - / -
worker unfit        ``HandedBack(worker_unfit)``, the error recorded  QUEUED / visible now,
                                                                      receive spared
interrupted         ``HandedBack`` (a part: re-sent, receive spared)  QUEUED / visible now
crashed (a bug)     ``Retry`` without a lease: ``Backoff``            - / backoff
==================  ================================================  ==============================

"Receive spared": a give-back that is not the job's fault must not move the message towards the
DLQ, so on the last allowed receive it is re-sent as a new message (receive count 1) instead of
made visible again. A failure of the worker's own environment (``EnvironmentFailed``: scratch
full or unwritable, ffmpeg missing; ``transcoder.runtime.fitness`` decides) is such a give-back:
the worker retires, and the job must not have spent a receive on it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from enum import StrEnum

from transcoder.aws.queue import MAX_VISIBILITY_S
from transcoder.domain.errors import TranscoderError
from transcoder.domain.job import ErrorInfo, JobMessage, PartsRecord, Published, Reason
from transcoder.domain.transitions import Lease, Refusal, Verdict


class Label(StrEnum):
    """How a delivery ended; labels ``transcoder_jobs_total`` and the ``job.settled`` log line."""

    COMPLETED = "completed"
    FAILED = "failed"
    RETRY = "retry"
    EXHAUSTED = "exhausted"
    HANDED_BACK = "handed_back"
    LEASE_LOST = "lease_lost"
    DUPLICATE = "duplicate"
    SUPERSEDED = "superseded"
    HELD = "held"
    DEFERRED = "deferred"
    POSTPONED = "postponed"
    POISON = "poison"
    WORKER_UNFIT = "worker_unfit"
    SPLIT = "split"  # a long upload planned as parts, their messages sent
    PART_DONE = "part_done"  # one part of a chunked job encoded and uploaded


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Every backoff the worker uses; built from ``Settings`` (docs/reliability.md)."""

    max_receive_count: int
    visibility_s: int
    retry_base_s: float  # a job's retryable failure
    retry_max_s: float
    defer_base_s: float  # the table could not be reached, or a bug, before the claim
    defer_max_s: float
    jitter_min: float = 0.5  # a step is jittered uniformly in [jitter_min, 1] of itself

    def backoff_s(self, receive_count: int, base_s: float, max_s: float, rng: random.Random) -> int:
        """Exponential in the receive count, capped, jittered; at least 1 s."""
        step = min(max_s, base_s * 2 ** max(0, receive_count - 1))
        return max(1, int(step * rng.uniform(self.jitter_min, 1.0)))

    def held_delay_s(self, receive_count: int, remaining_s: float, rng: random.Random) -> int:
        """Come back once the holder's lease has run out, plus a growing jittered step."""
        step = self.visibility_s * 2 ** max(0, receive_count - 1)
        return int(min(MAX_VISIBILITY_S - 600, remaining_s + step * rng.uniform(0.1, 0.3)))


# ------------------------------------------------------------------------ facts


@dataclass(frozen=True, slots=True)
class NotAJob:
    error: ErrorInfo


@dataclass(frozen=True, slots=True)
class FromNewerProducer:
    version: int


@dataclass(frozen=True, slots=True)
class TableUnreachable:
    error: ErrorInfo


@dataclass(frozen=True, slots=True)
class Crashed:
    error: ErrorInfo  # an unexpected exception before the claim: a bug


@dataclass(frozen=True, slots=True)
class NotClaimed:
    refusal: Refusal


@dataclass(frozen=True, slots=True)
class Succeeded:
    lease: Lease
    published: Published


@dataclass(frozen=True, slots=True)
class SplitPlanned:
    """The job's source is long: it runs as ``plan``'s parts (nothing was encoded)."""

    lease: Lease
    message: JobMessage
    plan: PartsRecord


@dataclass(frozen=True, slots=True)
class PartFinished:
    """A part's outputs are uploaded and recorded ``DONE``; another part stitches."""

    lease: Lease


@dataclass(frozen=True, slots=True)
class Errored:
    lease: Lease
    error: ErrorInfo


@dataclass(frozen=True, slots=True)
class LostLease:
    error: ErrorInfo


@dataclass(frozen=True, slots=True)
class Interrupted:
    lease: Lease


@dataclass(frozen=True, slots=True)
class EnvironmentFailed:
    """The job failed because this worker cannot run jobs (it is unfit now), not because of it."""

    lease: Lease
    error: ErrorInfo


Facts = (
    NotAJob
    | FromNewerProducer
    | TableUnreachable
    | Crashed
    | NotClaimed
    | Succeeded
    | SplitPlanned
    | PartFinished
    | Errored
    | LostLease
    | Interrupted
    | EnvironmentFailed
)

# --------------------------------------------------------------------- outcomes


@dataclass(frozen=True, slots=True)
class Completed:
    lease: Lease
    published: Published
    label: Label = Label.COMPLETED


@dataclass(frozen=True, slots=True)
class FanOut:
    """Record the parts, send one message per part not done, release the job, delete."""

    lease: Lease
    message: JobMessage
    plan: PartsRecord
    label: Label = Label.SPLIT


@dataclass(frozen=True, slots=True)
class Failed:
    """Permanent: ``FAILED``, delete. Also the exhausted case, whose message must reach the DLQ."""

    lease: Lease
    error: ErrorInfo
    to_dlq: bool = False  # exhausted: leave the message visible so SQS dead-letters it
    label: Label = Label.FAILED


@dataclass(frozen=True, slots=True)
class Retry:
    lease: Lease
    error: ErrorInfo
    delay_s: int
    label: Label = Label.RETRY


@dataclass(frozen=True, slots=True)
class HandedBack:
    lease: Lease
    resend: bool  # the last allowed receive: re-send instead of making it visible
    error: ErrorInfo | None = None  # recorded on the QUEUED record (an unfit worker's cause)
    label: Label = Label.HANDED_BACK


@dataclass(frozen=True, slots=True)
class LeaseLost:
    error: ErrorInfo
    label: Label = Label.LEASE_LOST


@dataclass(frozen=True, slots=True)
class Acknowledge:
    label: Label  # DUPLICATE or SUPERSEDED: delete, write nothing


@dataclass(frozen=True, slots=True)
class GiveBack:
    """Not the job's fault: visible again in ``delay_s``; on the last receive, re-sent instead."""

    label: Label  # HELD, DEFERRED or POSTPONED
    delay_s: int
    resend: bool
    error: ErrorInfo | None = None


@dataclass(frozen=True, slots=True)
class Backoff:
    """A bug before the claim: visible again in ``delay_s``, the receive counted."""

    error: ErrorInfo
    delay_s: int
    label: Label = Label.DEFERRED


@dataclass(frozen=True, slots=True)
class Poison:
    error: ErrorInfo
    label: Label = Label.POISON


Outcome = (
    Completed
    | FanOut
    | Failed
    | Retry
    | HandedBack
    | LeaseLost
    | Acknowledge
    | GiveBack
    | Backoff
    | Poison
)

POSTPONE_S = 300  # how long a newer producer's message waits for a newer worker


def decide(facts: Facts, receive_count: int, policy: RetryPolicy, rng: random.Random) -> Outcome:
    """The one decision: what this delivery's facts mean for the record and the message."""
    last = receive_count >= policy.max_receive_count
    match facts:
        case (
            Succeeded()
            | SplitPlanned()
            | PartFinished()
            | Errored()
            | Interrupted()
            | EnvironmentFailed()
            | LostLease()
        ):
            return _claimed(facts, receive_count, policy, rng)
        case NotClaimed(refusal):
            return _unclaimed(refusal, receive_count, policy, rng)
        case TableUnreachable(error) if error.code == Reason.AWS_ERROR:
            # AWS keeps refusing the request itself (AccessDenied, ...): it must reach the DLQ.
            delay = policy.backoff_s(receive_count, policy.defer_base_s, policy.defer_max_s, rng)
            return Backoff(error, delay)
        case TableUnreachable(error):
            delay = policy.backoff_s(receive_count, policy.defer_base_s, policy.defer_max_s, rng)
            return GiveBack(Label.DEFERRED, delay, resend=last, error=error)
        case Crashed(error):
            delay = policy.backoff_s(receive_count, policy.defer_base_s, policy.defer_max_s, rng)
            return Backoff(error, delay)
        case FromNewerProducer(_):
            return GiveBack(Label.POSTPONED, POSTPONE_S, resend=last)
        case NotAJob(error):
            return Poison(error)


def _claimed(
    facts: Succeeded
    | SplitPlanned
    | PartFinished
    | Errored
    | Interrupted
    | EnvironmentFailed
    | LostLease,
    receive_count: int,
    policy: RetryPolicy,
    rng: random.Random,
) -> Outcome:
    """The facts of a job this worker claimed and ran."""
    last = receive_count >= policy.max_receive_count
    match facts:
        case Succeeded(lease, published):
            return Completed(lease, published)
        case SplitPlanned(lease, message, plan):
            return FanOut(lease, message, plan)
        case PartFinished():
            return Acknowledge(Label.PART_DONE)
        case Errored(lease, error) if not error.retryable:
            return Failed(lease, error)
        case Errored(lease, error) if last:
            return Failed(
                lease, exhausted(error, receive_count), to_dlq=True, label=Label.EXHAUSTED
            )
        case Errored(lease, error):
            delay = policy.backoff_s(receive_count, policy.retry_base_s, policy.retry_max_s, rng)
            return Retry(lease, error, delay)
        case Interrupted(lease):
            # A part handed back on shutdown (a Spot interruption is routine) keeps its receives:
            # re-sent, so a chunk interrupted twice is not one crash away from the DLQ.
            return HandedBack(lease, resend=last or lease.part is not None)
        case EnvironmentFailed(lease, error):
            # Not the job's fault: visible at once for a healthy worker, the receive spared.
            return HandedBack(lease, resend=last, error=error, label=Label.WORKER_UNFIT)
        case LostLease(error):
            return LeaseLost(error)


def _unclaimed(
    refusal: Refusal, receive_count: int, policy: RetryPolicy, rng: random.Random
) -> Outcome:
    if refusal.verdict is Verdict.STALE:
        return Acknowledge(Label.SUPERSEDED)
    if refusal.verdict in (Verdict.DUPLICATE, Verdict.ALREADY_FAILED):
        return Acknowledge(Label.DUPLICATE)
    # HELD, or a claim that kept losing races: another attempt holds the job.
    remaining = refusal.lease_remaining_s or float(policy.visibility_s)
    delay = policy.held_delay_s(receive_count, remaining, rng)
    return GiveBack(Label.HELD, delay, resend=receive_count >= policy.max_receive_count)


def error_info(exc: BaseException) -> ErrorInfo:
    """The recorded error of an exception: its reason code, or ``internal_error`` for a bug."""
    if isinstance(exc, TranscoderError):
        return ErrorInfo(code=exc.reason, message=str(exc)[:1000], retryable=exc.retryable)
    return ErrorInfo(
        code=Reason.INTERNAL_ERROR, message=f"{type(exc).__name__}: {exc}"[:1000], retryable=True
    )


def exhausted(error: ErrorInfo, receive_count: int) -> ErrorInfo:
    """The error of a job whose last allowed receive failed too; it names the last cause."""
    message = f"gave up after {receive_count} attempts; last: {error.code}: {error.message}"
    return ErrorInfo(code=Reason.RETRIES_EXHAUSTED, message=message[:1000], retryable=True)
