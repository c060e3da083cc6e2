"""What the dead-letter handler does with each DLQ record: pure decisions, tested by equality."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from enum import StrEnum
from typing import Any

from transcoder.domain.job import ID_PATTERN, JobMessage, Reason, Status, isoformat

JOB_ID = re.compile(r"^[0-9a-f]{32}$")


class Verdict(StrEnum):
    MARK = "mark"  # this job's record: FAILED, retries_exhausted, with the last cause
    ADOPT = "adopt"  # an earlier upload's settled record: this newer job takes it over, FAILED
    WAIT = "wait"  # an earlier upload's job still runs: leave the message to SQS for later
    SKIP = "skip"  # leave the record alone


def judge(
    current: Mapping[str, Any] | None, message: JobMessage, now: float
) -> tuple[Verdict, str]:
    """What to do with a dead-lettered job, given its video's record, and why."""
    if current is None:
        return Verdict.SKIP, "no record"
    status, error = current.get("status"), current.get("error") or {}
    live = status == Status.PROCESSING and float(current.get("lease_expires_at", 0)) > now
    if current.get("job_id") != message.job_id:
        # A newer upload's job can spend its receives waiting for an older job's lease (the
        # worker's "held" outcome); it must not vanish with the DLQ message.
        if str(current.get("submitted_at", "")) > isoformat(message.submitted_at):
            return Verdict.SKIP, "superseded by a newer upload of this video"
        if live:
            return Verdict.WAIT, "an earlier upload of this video is still being processed"
        return Verdict.ADOPT, "the record is an earlier upload's; this upload never ran"
    if status == Status.COMPLETED:
        return Verdict.SKIP, "already completed"
    if live:
        return Verdict.SKIP, "running under a live lease"
    if status == Status.FAILED and error.get("retryable") is False:
        return Verdict.SKIP, f"already failed permanently ({error.get('code')})"
    if status == Status.FAILED and error.get("code") == Reason.RETRIES_EXHAUSTED:
        return Verdict.SKIP, "already marked retries_exhausted"
    return Verdict.MARK, "dead-lettered"


def exhausted_error(current: Mapping[str, Any]) -> dict[str, Any]:
    """``retries_exhausted`` naming the last recorded cause; retryable by an operator."""
    cause = current.get("error") or {}
    attempts = int(current.get("attempts", 0))
    if cause.get("code"):
        last = f"{cause['code']}: {cause.get('message', '')}"
    else:
        last = "none recorded (no attempt reached an error)"
    message = f"dead-lettered after {attempts} attempt(s); last cause: {last}"
    return {"code": Reason.RETRIES_EXHAUSTED.value, "message": message[:1000], "retryable": True}


def adopted_error() -> dict[str, Any]:
    message = (
        "dead-lettered while an earlier upload of this video was being processed; "
        "this upload never ran: retry it"
    )
    return {"code": Reason.RETRIES_EXHAUSTED.value, "message": message, "retryable": True}


def poison_ids(body: str) -> tuple[str, str, str | None] | None:
    """(user_id, video_id, job_id or None) when a non-job body still names a valid video."""
    try:
        data = json.loads(body)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    user, video, job = data.get("user_id"), data.get("video_id"), data.get("job_id")
    if not all(isinstance(v, str) and ID_PATTERN.fullmatch(v) for v in (user, video)):
        return None
    job_id = job if isinstance(job, str) and JOB_ID.fullmatch(job) else None
    return str(user), str(video), job_id


def message_attributes(record: Mapping[str, Any]) -> dict[str, str]:
    """String message attributes of an SQS Lambda record (``stringValue`` in Lambda's shape)."""
    attributes = record.get("messageAttributes") or {}
    return {
        name: str(value.get("stringValue"))
        for name, value in attributes.items()
        if isinstance(value, Mapping) and value.get("stringValue") is not None
    }
