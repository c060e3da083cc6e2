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
split (worker)            as renew                    ``parts``: the chunk plan, every part
                                                      ``QUEUED`` (kept when already planned)
fanned out (worker)       as renew                    ``parts.sent``; the job's lease released
                                                      (the parts hold it now)
claim a part (worker)     this job ``PROCESSING``     the part's lease (owner, attempt+1,
                          with this plan; the part    expiry); a ``DONE`` part that holds the
                          not ``DONE``, its lease     lapsed stitch lease is claimed to stitch
                          lapsed
part renew / confirm /    ``PROCESSING``, the part's  the part's expiry and progress; the job's
hand back (worker)        lease                       progress is its parts' (weighted)
part done (worker)        as part renew               the part ``DONE``; the write that makes
                                                      every part ``DONE`` makes this part the
                                                      ``stitcher`` (decided once)
complete / fail with a    the stitcher's lease / any  ``COMPLETED`` / ``FAILED`` naming the part
part lease (worker)       part's lease
dead-letter a part        this job, the part not      ``FAILED retries_exhausted`` naming the
(DLQ handler)             done, its lease lapsed      part and its last cause
========================  ==========================  =========================================

Chunked jobs (``JobRecord.parts``, issue 15): the worker that claims a long upload plans it
(``split``), sends one message per part and releases the job's lease (``fanned_out``). From then
on each part has its own lease, attempts and error inside the record; any write to one part is a
conditional write of the whole record, so the part that completes last is known exactly once.
A newer upload's claim wipes ``parts`` with the rest of the old upload (``_PER_UPLOAD``); the old
parts' fences then fail and their messages are acknowledged as superseded.

Which upload is newer: S3's ``sequencer`` orders events of one key only, so it is compared only
when both uploads have the same key; otherwise the S3 event time decides (``uploaded_at``, the
Lambda's ``submitted_at`` for records written before it was kept), then key and job id, so that
every actor orders any two uploads the same way.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from transcoder.domain.job import (
    ErrorInfo,
    JobMessage,
    Part,
    PartsRecord,
    PartState,
    PartStatus,
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
    part: int | None = None  # a chunked job's part: the attempt is the part's own
    # The part was done already: this claim is the stitcher's after a lapsed stitch (not fenced).
    stitch_only: bool = field(default=False, compare=False)


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
    "parts",
    "enqueued",
    "message_id",
)
_NO_LEASE = {"lease_owner": None, "lease_expires_at": None}


def _fenced(current: JobRecord | None, lease: Lease) -> Refusal | None:
    """None when ``lease`` still owns ``current``; otherwise why not."""
    if lease.part is not None:
        return _part_fenced(current, lease)
    if (
        current is None
        or current.status is not Status.PROCESSING
        or current.job_id != lease.job_id
        or current.lease_owner != lease.owner
        or current.attempts != lease.attempt
    ):
        return Refusal(Verdict.LEASE_LOST, f"attempt {lease.attempt} no longer owns the record")
    return None


def _part_fenced(current: JobRecord | None, lease: Lease) -> Refusal | None:
    """A part's lease owns its part while it runs, and, as the stitcher, after it is done."""
    index = lease.part
    lost = Refusal(Verdict.LEASE_LOST, f"attempt {lease.attempt} no longer owns its part")
    if (
        index is None
        or current is None
        or current.status is not Status.PROCESSING
        or current.job_id != lease.job_id
        or current.parts is None
        or index >= len(current.parts.states)
    ):
        return lost
    state = current.parts.states[index]
    if state.owner != lease.owner or state.attempts != lease.attempt:
        return lost
    if state.status is PartStatus.PROCESSING:
        return None
    if state.status is PartStatus.DONE and current.parts.stitcher == index:
        return None
    return lost


def _parts(current: JobRecord | None) -> PartsRecord:
    assert current is not None and current.parts is not None  # only after a part fence
    return current.parts


def _part_write(
    current: JobRecord | None, lease: Lease, state: PartState, clock: Clock, **changes: Any
) -> Write:
    """``current`` with part ``lease.part`` replaced by ``state``; the job's progress follows."""
    assert lease.part is not None
    parts = _parts(current).with_state(lease.part, state)
    return _write(current, clock, parts=parts, progress=parts.progress(), **changes)


def _part_state(current: JobRecord | None, lease: Lease) -> PartState:
    assert lease.part is not None
    return _parts(current).states[lease.part]


def _part_label(current: JobRecord | None, index: int) -> str:
    return _parts(current).part(index).label


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
    """A worker received ``message`` and wants to run it (a part's message: ``claim_part``)."""
    if message.part is not None:
        return claim_part(current, message, owner, lease_s, clock)
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
    if current is not None and not fresh and current.status is Status.FAILED:
        fields["parts"] = None  # a failed chunked job runs again from scratch, planned afresh
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
    if current.status is Status.PROCESSING and current.parts is not None and current.parts.sent:
        return Refusal(Verdict.DUPLICATE, "running as its parts (every part's message was sent)")
    if remaining > 0:
        return Refusal(Verdict.HELD, "another attempt holds a live lease", remaining)
    return None


def lease_of(record: JobRecord, part: int | None = None) -> Lease:
    """The lease a successful claim wrote (of the job, or of its part ``part``)."""
    assert record.job_id is not None
    if part is not None:
        assert record.parts is not None
        state = record.parts.states[part]
        assert state.owner is not None
        return Lease(
            record.user_id,
            record.video_id,
            record.job_id,
            state.owner,
            state.attempts,
            part,
            stitch_only=state.status is PartStatus.DONE,
        )
    assert record.lease_owner is not None
    return Lease(
        record.user_id, record.video_id, record.job_id, record.lease_owner, record.attempts
    )


def renew(
    current: JobRecord | None, lease: Lease, lease_s: float, progress: int, clock: Clock
) -> Decision:
    refusal = _fenced(current, lease)
    if refusal is not None:
        return refusal
    if lease.part is not None:
        state = _part_state(current, lease)
        update: dict[str, Any] = {"lease_expires_at": clock.epoch_s + lease_s}
        if state.status is PartStatus.PROCESSING:
            update["progress"] = min(99, progress)
        return _part_write(current, lease, state.model_copy(update=update), clock)
    return _write(current, clock, lease_expires_at=clock.epoch_s + lease_s, progress=progress)


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
    """``COMPLETED``: the single pass's lease, or the stitcher's (the last part's) lease."""
    refusal = _fenced(current, lease)
    if refusal is None and lease.part is not None and _parts(current).stitcher != lease.part:
        refusal = Refusal(Verdict.LEASE_LOST, "only the stitcher completes a chunked job")
    return refusal or _write(
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
    """``FAILED``; a part's failure fails its whole job, naming the part."""
    refusal = _fenced(current, lease)
    if refusal is not None:
        return refusal
    if lease.part is not None:
        label = _part_label(current, lease.part)
        error = error.model_copy(update={"message": f"{label}: {error.message}"[:1000]})
        state = _part_state(current, lease)
        if state.status is PartStatus.PROCESSING:  # no longer running: the job failed
            state = state.model_copy(
                update={"status": PartStatus.QUEUED, "owner": None, "lease_expires_at": None}
            )
        state = state.model_copy(update={"error": error})
        parts = _parts(current).with_state(lease.part, state)
        return _write(
            current,
            clock,
            status=Status.FAILED,
            error=error,
            failed_at=clock.now,
            parts=parts,
            **_NO_LEASE,
        )
    return _write(
        current, clock, status=Status.FAILED, error=error, failed_at=clock.now, **_NO_LEASE
    )


def hand_back(
    current: JobRecord | None, lease: Lease, error: ErrorInfo | None, clock: Clock
) -> Decision:
    """``QUEUED`` again; for a part, only that part (the job keeps running as its other parts)."""
    refusal = _fenced(current, lease)
    if refusal is not None:
        return refusal
    if lease.part is not None:
        state = _part_state(current, lease)
        if state.status is PartStatus.DONE:  # the stitcher: the stitch lease lapses, part kept
            return _part_write(
                current, lease, state.model_copy(update={"lease_expires_at": None}), clock
            )
        update: dict[str, Any] = {
            "status": PartStatus.QUEUED,
            "owner": None,
            "lease_expires_at": None,
            "progress": 0,
        }
        if error is not None:
            update["error"] = error
        return _part_write(current, lease, state.model_copy(update=update), clock)
    changes: dict[str, Any] = {"status": Status.QUEUED, **_NO_LEASE}
    if error is not None:
        changes["error"] = error
    return _write(current, clock, **changes)


# ------------------------------------------------------------ chunked jobs (issue 15)


def split(current: JobRecord | None, lease: Lease, plan: PartsRecord, clock: Clock) -> Decision:
    """The job's lease holder planned it as parts; a plan already recorded is kept as it is."""
    refusal = _fenced(current, lease)
    if refusal is not None:
        return refusal
    assert current is not None
    if current.parts is not None:
        return _write(current, clock)
    return _write(current, clock, parts=plan, progress=plan.progress())


def fanned_out(current: JobRecord | None, lease: Lease, clock: Clock) -> Decision:
    """Every part's message was sent: the job's own lease is released to its parts."""
    refusal = _fenced(current, lease)
    if refusal is None and (current is None or current.parts is None):
        refusal = Refusal(Verdict.SKIP, "the job was never split")
    if refusal is not None:
        return refusal
    parts = _parts(current).model_copy(update={"sent": True})
    return _write(current, clock, parts=parts, **_NO_LEASE)


def claim_part(
    current: JobRecord | None, message: JobMessage, owner: str, lease_s: float, clock: Clock
) -> Decision:
    """A worker received one part's message and wants to run it (or, as stitcher, to stitch)."""
    part = message.part
    assert part is not None
    refusal = _claim_part_refusal(current, message, part, clock)
    if refusal is not None:
        return refusal
    assert current is not None and current.parts is not None
    state = current.parts.states[part.index]
    update: dict[str, Any] = {
        "owner": owner,
        "attempts": state.attempts + 1,
        "lease_expires_at": clock.epoch_s + lease_s,
    }
    if state.status is not PartStatus.DONE:
        update.update(status=PartStatus.PROCESSING, progress=0)
    parts = current.parts.with_state(part.index, state.model_copy(update=update))
    return _write(current, clock, parts=parts, progress=parts.progress())


def _claim_part_refusal(
    current: JobRecord | None, message: JobMessage, part: Part, clock: Clock
) -> Refusal | None:
    if current is None or current.job_id != message.job_id:
        return Refusal(Verdict.STALE, "the record is another upload's now")
    if current.status is Status.COMPLETED:
        return Refusal(Verdict.DUPLICATE, "already completed")
    if current.status is Status.FAILED:
        return Refusal(Verdict.ALREADY_FAILED, "the job failed; its parts are dropped")
    if (
        current.status is not Status.PROCESSING
        or current.parts is None
        or not current.parts.matches(part)
    ):
        return Refusal(Verdict.DUPLICATE, "not a part of the job's current plan")
    state = current.parts.states[part.index]
    stitcher = current.parts.stitcher == part.index
    if state.status is PartStatus.DONE and not stitcher:
        return Refusal(Verdict.DUPLICATE, f"{part.label} is done already")
    if state.live(clock.epoch_s):
        remaining = max(0.0, (state.lease_expires_at or 0.0) - clock.epoch_s)
        return Refusal(Verdict.HELD, f"another attempt holds {part.label}", remaining)
    return None


def part_done(current: JobRecord | None, lease: Lease, clock: Clock) -> Decision:
    """The part's outputs are uploaded; the last part done becomes the stitcher, once."""
    refusal = _fenced(current, lease)
    if refusal is not None:
        return refusal
    assert lease.part is not None
    state = _part_state(current, lease)
    if state.status is PartStatus.DONE:  # its answer was lost and it is re-sent: no change
        return _write(current, clock)
    parts = _parts(current).with_state(
        lease.part, state.model_copy(update={"status": PartStatus.DONE, "progress": 100})
    )
    if parts.done() == len(parts.states) and parts.stitcher is None:
        parts = parts.model_copy(update={"stitcher": lease.part})
    return _write(current, clock, parts=parts, progress=parts.progress())


def dead_letter_part(current: JobRecord | None, message: JobMessage, clock: Clock) -> Decision:
    """A part's message spent its receives: its job fails ``retries_exhausted``, naming it."""
    part = message.part
    assert part is not None
    if current is None or current.job_id != message.job_id:
        return Refusal(Verdict.SKIP, "the record is another upload's now")
    if current.status is Status.COMPLETED:
        return Refusal(Verdict.SKIP, "already completed")
    if current.status is Status.FAILED:
        code = current.error.code if current.error else "?"
        return Refusal(Verdict.SKIP, f"the job failed already ({code})")
    if current.parts is None or not current.parts.matches(part):
        return Refusal(Verdict.SKIP, "not a part of the job's current plan")
    state = current.parts.states[part.index]
    if state.status is PartStatus.DONE and current.parts.stitcher != part.index:
        return Refusal(Verdict.SKIP, f"{part.label} is done")
    if state.live(clock.epoch_s):
        return Refusal(Verdict.WAIT, f"{part.label} is running under a live lease")
    cause = state.error
    last = f"{cause.code}: {cause.message}" if cause else "none recorded (no attempt failed)"
    text = f"{part.label} dead-lettered after {state.attempts} attempt(s); last cause: {last}"
    error = ErrorInfo(code=Reason.RETRIES_EXHAUSTED, message=text[:1000], retryable=True)
    return _write(
        current,
        clock,
        status=Status.FAILED,
        error=error,
        failed_at=clock.now,
        dead_lettered_at=clock.now,
        **_NO_LEASE,
    )


# ------------------------------------------------------- the DLQ handler and operators


def dead_letter(current: JobRecord | None, message: JobMessage, clock: Clock) -> Decision:
    """The message spent its receives: the job fails ``retries_exhausted`` unless it settled."""
    if message.part is not None:
        return dead_letter_part(current, message, clock)
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
        parts=None,  # a chunked job starts over from its own message: planned afresh
        **_NO_LEASE,
    )
