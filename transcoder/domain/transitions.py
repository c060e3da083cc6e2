"""The job's state machine: every writer of a job record asks this module what to write.

Each function takes the record as read (``None`` when there is none) and an event, and returns
either a ``Write`` (the whole new record, to be stored on condition that the stored ``rev`` is the
one read) or a ``Refusal`` (nothing is written, and why). Every write bumps ``rev``, sets a fresh
``write_id`` and ``updated_at``; a write whose condition fails is re-read and re-decided by the
caller (or recognised as its own by ``write_id`` when the answer was lost). No I/O here.

========================  ==========================  =========================================
event (who)               allowed from                writes
========================  ==========================  =========================================
upload seen (Lambda)      none; an older upload's     ``QUEUED`` (or ``FAILED`` + reason for a
                          record without a live       rejected upload), attempts 0
                          lease
claim (worker)            this job ``QUEUED``,        ``PROCESSING``, lease (owner, attempt+1,
                          retryable ``FAILED``,       expiry), the message claimed; attempt 1
                          lapsed ``PROCESSING``; an   and a clean slate for an older upload's
                          older upload's record       record
                          without a live lease
renew / progress /        ``PROCESSING`` with this    lease expiry, progress, source facts
source (worker)           lease (owner + attempt)
confirm (worker)          as renew, source not        nothing but ``rev`` (the publish fence)
                          deleted
complete (worker)         as renew                    ``COMPLETED``, outputs, progress 100
fail (worker)             as renew                    ``FAILED`` + error
hand back (worker)        as renew                    ``QUEUED`` (+ error when retryable)
dead-letter (DLQ          this job, not completed,    ``FAILED retries_exhausted`` (last cause);
handler)                  no live lease, not failed   an older upload's settled record is
                          permanently                 adopted by this job as ``FAILED``
poison (DLQ handler)      none; this job unsettled    ``FAILED invalid_message``
retry (operator)          this job ``FAILED``         ``QUEUED``
                          retryable
upload deleted (Lambda)   this key's upload, not      ``FAILED source_deleted``; a running job
                          completed                   is flagged and fails at its publish fence
========================  ==========================  =========================================

Which upload is newer: S3's ``sequencer`` orders events of one key only, so it is compared only
when both uploads have the same key; otherwise the S3 event time decides (``uploaded_at``, the
Lambda's ``submitted_at`` for records written before it was kept), then key and job id, so that
every actor orders any two uploads the same way.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from transcoder.domain.job import (
    ErrorInfo,
    JobMessage,
    Published,
    Reason,
    SourceFacts,
    Status,
)
from transcoder.domain.record import JobRecord

SEQUENCER_WIDTH = 64


class Verdict(StrEnum):
    """Why nothing was written (or, for RESEND/HELD, why the message is still sent)."""

    DUPLICATE = "duplicate"  # this very job is recorded (and sent) already / already completed
    RESEND = "resend"  # this job is recorded but its message was never confirmed sent
    STALE = "stale"  # a newer upload of this video owns the record
    HELD = "held"  # another job holds a live lease: come back when it has run out
    ALREADY_FAILED = "already_failed"  # this job failed permanently
    LEASE_LOST = "lease_lost"  # the writer's lease is not the record's any more
    SOURCE_DELETED = "source_deleted"  # the upload was deleted: never publish it
    WAIT = "wait"  # the DLQ handler must come back later (an older job still runs)
    SKIP = "skip"  # nothing to do (the reason says why)
    NOT_RETRYABLE = "not_retryable"  # retry refused (the reason says why)


@dataclass(frozen=True, slots=True)
class Write:
    """Store ``record`` on condition that the stored rev is ``expected_rev`` (None: no record)."""

    record: JobRecord
    expected_rev: int | None


@dataclass(frozen=True, slots=True)
class Refusal:
    verdict: Verdict
    reason: str
    lease_remaining_s: float = 0.0


Decision = Write | Refusal


@dataclass(frozen=True, slots=True)
class Lease:
    """Proof of ownership of one attempt; every fenced write carries it."""

    user_id: str
    video_id: str
    job_id: str
    owner: str
    attempt: int


@dataclass(frozen=True, slots=True)
class Clock:
    """The moment an event happens: wall time for timestamps, epoch seconds for leases."""

    now: datetime

    @property
    def epoch_s(self) -> float:
        return self.now.timestamp()


# ------------------------------------------------------------------------- ordering


@dataclass(frozen=True, slots=True)
class UploadOrder:
    key: str
    sequencer: str | None
    uploaded_at: datetime | None
    job_id: str

    @classmethod
    def of_message(cls, message: JobMessage) -> UploadOrder:
        uploaded = message.uploaded_at or message.submitted_at
        return cls(message.key, message.source_sequencer, uploaded, message.job_id)

    @classmethod
    def of_record(cls, record: JobRecord) -> UploadOrder:
        uploaded = record.uploaded_at or record.submitted_at
        return cls(record.source_key or "", record.source_sequencer, uploaded, record.job_id or "")


def _padded(sequencer: str) -> str:
    return sequencer.upper().rjust(SEQUENCER_WIDTH, "0")


def is_newer(a: UploadOrder, b: UploadOrder) -> bool:
    """Upload ``a`` happened after upload ``b`` (the same answer for every actor)."""
    if a.job_id == b.job_id:
        return False
    if a.key == b.key and a.sequencer and b.sequencer:
        return _padded(a.sequencer) > _padded(b.sequencer)
    if a.uploaded_at is not None and b.uploaded_at is not None and a.uploaded_at != b.uploaded_at:
        return a.uploaded_at > b.uploaded_at
    if a.uploaded_at is None or b.uploaded_at is None:
        return b.uploaded_at is None and a.uploaded_at is not None
    return (a.key, a.job_id) > (b.key, b.job_id)


# ------------------------------------------------------------------------- helpers


def _write(current: JobRecord | None, clock: Clock, **changes: Any) -> Write:
    """``current`` with ``changes``, the next rev, a fresh write id; conditional on its rev."""
    base = current.model_dump() if current is not None else {}
    base.update(changes)
    base["rev"] = (current.rev if current is not None else 0) + 1
    base["write_id"] = uuid.uuid4().hex
    base["updated_at"] = clock.now
    return Write(JobRecord.model_validate(base), current.rev if current is not None else None)


def _upload_fields(message: JobMessage, clock: Clock) -> dict[str, Any]:
    """A clean slate for ``message``'s upload: nothing of an earlier upload survives."""
    return {
        "job_id": message.job_id,
        "user_id": message.user_id,
        "video_id": message.video_id,
        "source_bucket": message.bucket,
        "source_key": message.key,
        "source_sequencer": message.source_sequencer,
        "source_version": message.source_version,
        "uploaded_at": message.uploaded_at,
        "trace_id": message.trace_id,
        "submitted_at": message.submitted_at,
        "message": message.model_dump_json(),
        "attempts": 0,
        "progress": 0,
        "renditions": {},
        "created_at": clock.now,
        **dict.fromkeys(_PER_UPLOAD, None),
    }


_PER_UPLOAD = (
    "lease_owner",
    "lease_expires_at",
    "error",
    "source",
    "source_size",
    "started_at",
    "completed_at",
    "failed_at",
    "requeued_at",
    "dead_lettered_at",
    "source_deleted_at",
    "poster",
    "thumbnails",
    "hls",
    "enqueued",
    "message_id",
)
_NO_LEASE = {"lease_owner": None, "lease_expires_at": None}


def _fenced(current: JobRecord | None, lease: Lease) -> Refusal | None:
    """None when ``lease`` still owns ``current``; otherwise why not."""
    if (
        current is None
        or current.status is not Status.PROCESSING
        or current.job_id != lease.job_id
        or current.lease_owner != lease.owner
        or current.attempts != lease.attempt
    ):
        return Refusal(Verdict.LEASE_LOST, f"attempt {lease.attempt} no longer owns the record")
    return None


# ------------------------------------------------------------------- the Lambda


def upload_seen(
    current: JobRecord | None,
    message: JobMessage,
    clock: Clock,
    *,
    size_bytes: int,
    rejection: ErrorInfo | None = None,
) -> Decision:
    """An S3 upload was seen: record it ``QUEUED`` (or ``FAILED`` when it was rejected)."""
    if current is not None:
        refusal = _upload_refusal(current, message, clock)
        if refusal is not None:
            return refusal
    fields = _upload_fields(message, clock)
    fields.update(source_size=size_bytes, status=Status.QUEUED, enqueued=False)
    if rejection is not None:
        fields.update(status=Status.FAILED, error=rejection, failed_at=clock.now, enqueued=None)
    return _write(current, clock, **fields)


def _upload_refusal(current: JobRecord, message: JobMessage, clock: Clock) -> Refusal | None:
    if current.job_id == message.job_id:
        if current.enqueued is False:
            return Refusal(Verdict.RESEND, "recorded, but its message was never confirmed sent")
        return Refusal(Verdict.DUPLICATE, "this upload is already recorded")
    if not is_newer(UploadOrder.of_message(message), UploadOrder.of_record(current)):
        return Refusal(Verdict.STALE, "a newer upload of this video is already recorded")
    if current.lease_live(clock.epoch_s):
        remaining = current.lease_remaining_s(clock.epoch_s)
        return Refusal(Verdict.HELD, "an earlier upload is being processed", remaining)
    return None


def enqueued(current: JobRecord | None, job_id: str, message_id: str, clock: Clock) -> Decision:
    """The Lambda confirmed the message was sent."""
    if current is None or current.job_id != job_id:
        return Refusal(Verdict.SKIP, "the record is another upload's now")
    if current.enqueued is not False:
        return Refusal(Verdict.SKIP, "already confirmed")
    return _write(current, clock, enqueued=True, message_id=message_id)


def upload_deleted(
    current: JobRecord | None, key: str, sequencer: str | None, clock: Clock
) -> Decision:
    """The upload's object was deleted: it must never be published."""
    if current is None or current.source_key != key:
        return Refusal(Verdict.SKIP, "the record describes another upload")
    if (
        sequencer
        and current.source_sequencer
        and _padded(sequencer) < _padded(current.source_sequencer)
    ):
        return Refusal(Verdict.SKIP, "the deleted object is older than the recorded upload")
    if current.status is Status.COMPLETED:
        return Refusal(Verdict.SKIP, "already published: renditions are kept")
    if current.permanently_failed():
        return Refusal(Verdict.SKIP, "already failed permanently")
    if current.lease_live(clock.epoch_s):
        return _write(current, clock, source_deleted_at=clock.now)
    error = ErrorInfo(
        code=Reason.SOURCE_DELETED,
        message="the upload was deleted before it was transcoded",
        retryable=False,
    )
    return _write(
        current, clock, status=Status.FAILED, error=error, failed_at=clock.now, **_NO_LEASE
    )


# ------------------------------------------------------------------- the worker


def claim(
    current: JobRecord | None, message: JobMessage, owner: str, lease_s: float, clock: Clock
) -> Decision:
    """A worker received ``message`` and wants to run it."""
    fresh = current is None or current.job_id != message.job_id
    refusal = _claim_refusal(current, message, clock)
    if refusal is not None:
        return refusal
    fields: dict[str, Any] = (
        _upload_fields(message, clock) if fresh else {"message": message.model_dump_json()}
    )
    if current is not None and not fresh:
        fields.update(source_deleted_at=current.source_deleted_at)
    if current is not None and fresh:
        fields["created_at"] = current.created_at or clock.now
    fields.update(
        status=Status.PROCESSING,
        lease_owner=owner,
        attempts=1 if fresh or current is None else current.attempts + 1,
        lease_expires_at=clock.epoch_s + lease_s,
        started_at=clock.now,
        progress=0,
    )
    return _write(current, clock, **fields)


def _claim_refusal(current: JobRecord | None, message: JobMessage, clock: Clock) -> Refusal | None:
    if current is None:
        return None
    remaining = current.lease_remaining_s(clock.epoch_s)
    if current.job_id != message.job_id:
        if is_newer(UploadOrder.of_record(current), UploadOrder.of_message(message)):
            return Refusal(Verdict.STALE, "a newer upload of this video owns the record")
        if remaining > 0:
            return Refusal(Verdict.HELD, "an earlier upload is being processed", remaining)
        return None
    if current.status is Status.COMPLETED:
        return Refusal(Verdict.DUPLICATE, "already completed")
    if current.permanently_failed():
        return Refusal(Verdict.ALREADY_FAILED, "already failed permanently")
    if remaining > 0:
        return Refusal(Verdict.HELD, "another attempt holds a live lease", remaining)
    return None


def lease_of(record: JobRecord) -> Lease:
    """The lease a successful claim wrote."""
    assert record.job_id is not None and record.lease_owner is not None
    return Lease(
        record.user_id, record.video_id, record.job_id, record.lease_owner, record.attempts
    )


def renew(
    current: JobRecord | None, lease: Lease, lease_s: float, progress: int, clock: Clock
) -> Decision:
    return _fenced(current, lease) or _write(
        current, clock, lease_expires_at=clock.epoch_s + lease_s, progress=progress
    )


def record_source(
    current: JobRecord | None, lease: Lease, facts: SourceFacts, clock: Clock
) -> Decision:
    return _fenced(current, lease) or _write(current, clock, source=facts)


def confirm(current: JobRecord | None, lease: Lease, clock: Clock) -> Decision:
    """The publish fence: the lease still owns the record and the upload was not deleted."""
    refusal = _fenced(current, lease)
    if refusal is None and current is not None and current.source_deleted_at is not None:
        return Refusal(Verdict.SOURCE_DELETED, "the upload was deleted while it was transcoded")
    return refusal or _write(current, clock)


def complete(
    current: JobRecord | None,
    lease: Lease,
    published: Published,
    clock: Clock,
) -> Decision:
    return _fenced(current, lease) or _write(
        current,
        clock,
        status=Status.COMPLETED,
        renditions=published.renditions,
        poster=published.poster,
        thumbnails=published.thumbnails,
        hls=published.hls,
        progress=100,
        completed_at=clock.now,
        error=None,
        **_NO_LEASE,
    )


def fail(current: JobRecord | None, lease: Lease, error: ErrorInfo, clock: Clock) -> Decision:
    return _fenced(current, lease) or _write(
        current, clock, status=Status.FAILED, error=error, failed_at=clock.now, **_NO_LEASE
    )


def hand_back(
    current: JobRecord | None, lease: Lease, error: ErrorInfo | None, clock: Clock
) -> Decision:
    changes: dict[str, Any] = {"status": Status.QUEUED, **_NO_LEASE}
    if error is not None:
        changes["error"] = error
    return _fenced(current, lease) or _write(current, clock, **changes)


# ------------------------------------------------------- the DLQ handler and operators


def dead_letter(current: JobRecord | None, message: JobMessage, clock: Clock) -> Decision:
    """The message spent its receives: the job fails ``retries_exhausted`` unless it settled."""
    if current is None:
        return Refusal(Verdict.SKIP, "no record")
    if current.job_id != message.job_id:
        return _adopt(current, message, clock)
    if current.status is Status.COMPLETED:
        return Refusal(Verdict.SKIP, "already completed")
    if current.lease_live(clock.epoch_s):
        return Refusal(Verdict.SKIP, "running under a live lease")
    if current.permanently_failed():
        code = current.error.code if current.error else "?"
        return Refusal(Verdict.SKIP, f"already failed permanently ({code})")
    exhausted_already = current.error is not None and current.error.code == Reason.RETRIES_EXHAUSTED
    if current.status is Status.FAILED and exhausted_already:
        return Refusal(Verdict.SKIP, "already marked retries_exhausted")
    return _write(
        current,
        clock,
        status=Status.FAILED,
        error=exhausted_error(current),
        failed_at=clock.now,
        dead_lettered_at=clock.now,
        **_NO_LEASE,
    )


def _adopt(current: JobRecord, message: JobMessage, clock: Clock) -> Decision:
    """A newer upload's job dead-lettered while an older upload owned the record."""
    if is_newer(UploadOrder.of_record(current), UploadOrder.of_message(message)):
        return Refusal(Verdict.SKIP, "superseded by a newer upload of this video")
    if current.lease_live(clock.epoch_s):
        return Refusal(Verdict.WAIT, "an earlier upload of this video is still being processed")
    error = ErrorInfo(
        code=Reason.RETRIES_EXHAUSTED,
        message="dead-lettered while an earlier upload of this video was being processed; "
        "this upload never ran: retry it",
        retryable=True,
    )
    fields = _upload_fields(message, clock)
    fields.update(enqueued=True, error=error, failed_at=clock.now, dead_lettered_at=clock.now)
    return _write(current, clock, status=Status.FAILED, **fields)


def exhausted_error(current: JobRecord) -> ErrorInfo:
    """``retries_exhausted`` naming the last recorded cause; retryable by an operator."""
    cause = current.error
    last = f"{cause.code}: {cause.message}" if cause else "none recorded (no attempt failed)"
    message = f"dead-lettered after {current.attempts} attempt(s); last cause: {last}"
    return ErrorInfo(code=Reason.RETRIES_EXHAUSTED, message=message[:1000], retryable=True)


def poison(
    current: JobRecord | None,
    ids: tuple[str, str, str | None],
    detail: str,
    clock: Clock,
) -> Decision:
    """A dead-lettered body that is not a job message but names a video (and maybe its job)."""
    user_id, video_id, job_id = ids
    error = ErrorInfo(code=Reason.INVALID_MESSAGE, message=detail[:1000], retryable=False)
    failed = {"status": Status.FAILED, "error": error, "failed_at": clock.now, **_NO_LEASE}
    if current is None:
        return _write(
            None, clock, user_id=user_id, video_id=video_id, created_at=clock.now, **failed
        )
    if job_id is None or current.job_id != job_id:
        return Refusal(Verdict.SKIP, "the record is another upload's")
    if current.status is Status.COMPLETED or current.lease_live(clock.epoch_s):
        return Refusal(Verdict.SKIP, f"the job is {current.status}")
    return _write(current, clock, **failed)


def retry(current: JobRecord | None, job_id: str | None, clock: Clock) -> Decision:
    """An operator re-sends a ``FAILED`` job whose cause was retryable (``retry``, redrive)."""
    if current is None:
        return Refusal(Verdict.NOT_RETRYABLE, "no such job")
    if job_id is not None and current.job_id != job_id:
        return Refusal(Verdict.STALE, "the record is another upload's (the worker will drop it)")
    if current.status is not Status.FAILED:
        only = f"the job is {current.status}; only FAILED jobs are retried"
        return Refusal(Verdict.NOT_RETRYABLE, only)
    if current.error is None or not current.error.retryable:
        code = current.error.code if current.error else "?"
        return Refusal(
            Verdict.ALREADY_FAILED, f"it failed permanently ({code}): upload the video again"
        )
    if current.job_message() is None:
        return Refusal(Verdict.NOT_RETRYABLE, "the record has no stored message to send")
    return _write(
        current,
        clock,
        status=Status.QUEUED,
        requeued_at=clock.now,
        progress=0,
        failed_at=None,
        **_NO_LEASE,
    )
