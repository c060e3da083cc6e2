"""The job event: what EventBridge is told when a job ends, built from the record alone.

When a record is written ``COMPLETED``, or ``FAILED`` by a writer that ends the job (the worker's
permanent or exhausted failure, the dead-letter handler, the enqueue Lambda's rejection or
``source_deleted``), that writer publishes one event: source ``transcoder``, detail type
``Video Transcoded`` or ``Video Failed``, detail = ``EventDetail`` (the record's public facts, no
lease, revision or message internals). ``job_event`` is pure, so the worker (aiobotocore,
``transcoder.aws.bus``) and the Lambdas (boto3, ``enqueue_lambda.bus``) send byte-identical events.

Delivery is at least once, never exactly once (docs/operations.md, "Job events"): an event is
published only after its write succeeded, and retried (bounded) when PutEvents fails or reports
failed entries, so a consumer can see it twice; ``event_id`` names the write it announces (job,
status and the record's revision), the same on every retry and new for a later final write of the
same job (an operator's ``retry`` that then completes). A worker that dies between the write and
the publish loses the event: consumers that must see every job reconcile from the table.

The detail is versioned like the job message: a new optional field keeps ``schema_version`` 1,
a change that breaks consumers bumps it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict

from transcoder.domain.job import RenditionStatus, Status, isoformat, utcnow
from transcoder.domain.record import JobRecord

EVENT_SCHEMA = 1
SOURCE = "transcoder"
COMPLETED = "Video Transcoded"
FAILED = "Video Failed"
DETAIL_TYPES = {Status.COMPLETED: COMPLETED, Status.FAILED: FAILED}
# PutEvents takes an event bus name or ARN (EventBridge API reference, PutEventsRequestEntry).
BUS_NAME = r"[/.\-_A-Za-z0-9]{1,256}"
BUS_PATTERN = re.compile(
    rf"^(?:{BUS_NAME}|arn:aws[a-z-]*:events:[a-z0-9-]+:[0-9]{{12}}:event-bus/{BUS_NAME})$"
)
MAX_ENTRIES = 10  # PutEvents' limit per call


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True)


class EventSource(_Frozen):
    bucket: str | None
    key: str | None
    version_id: str | None
    size_bytes: int | None
    duration_s: float | None
    width: int | None  # as displayed (after rotation)
    height: int | None


class EventRendition(_Frozen):
    status: RenditionStatus
    key: str | None
    bytes: int | None
    width: int | None
    height: int | None
    duration_s: float | None
    bitrate_kbps: int | None
    reason: str | None  # why it was skipped (e.g. never upscaled)


class EventPoster(_Frozen):
    key: str
    width: int
    height: int
    bytes: int


class EventThumbnails(_Frozen):
    sprite_key: str
    vtt_key: str
    count: int
    interval_s: float
    tile_width: int
    tile_height: int


class EventHls(_Frozen):
    master_key: str
    renditions: tuple[str, ...]  # the variants the master playlist lists


class EventError(_Frozen):
    code: str
    message: str
    retryable: bool  # true: an operator may `transcoder retry` it; false: upload it again


class EventDetail(_Frozen):
    """The ``detail`` of a job event (docs/operations.md, "Job events", has an example)."""

    schema_version: int = EVENT_SCHEMA
    event_id: str  # "{job_id}:{status}:{rev}": the same for every retry of this publication
    job_id: str | None
    user_id: str
    video_id: str
    status: Status
    source: EventSource
    renditions: dict[str, EventRendition]
    poster: EventPoster | None
    thumbnails: EventThumbnails | None
    hls: EventHls | None
    error: EventError | None
    attempts: int
    completed_at: str | None
    failed_at: str | None
    trace_id: str | None


@dataclass(frozen=True, slots=True)
class JobEvent:
    """One event, ready to be put on a bus."""

    detail_type: str
    detail: EventDetail
    time: datetime

    def entry(self, bus: str) -> dict[str, Any]:
        """The ``PutEvents`` entry for ``bus`` (a name or an ARN)."""
        return {
            "Source": SOURCE,
            "DetailType": self.detail_type,
            "Detail": self.detail.model_dump_json(),
            "EventBusName": bus,
            "Time": self.time,
        }


def _source(record: JobRecord) -> EventSource:
    facts = record.source
    return EventSource(
        bucket=record.source_bucket,
        key=record.source_key,
        version_id=record.source_version,
        size_bytes=facts.size_bytes if facts else record.source_size,
        duration_s=facts.duration_s if facts else None,
        width=facts.display_width if facts else None,
        height=facts.display_height if facts else None,
    )


def _outputs(record: JobRecord) -> dict[str, Any]:
    poster, thumbs, hls = record.poster, record.thumbnails, record.hls
    return {
        "renditions": {
            name: EventRendition.model_validate(r.model_dump())
            for name, r in record.renditions.items()
        },
        "poster": EventPoster.model_validate(poster.model_dump()) if poster else None,
        "thumbnails": EventThumbnails.model_validate(thumbs.model_dump()) if thumbs else None,
        "hls": EventHls(master_key=hls.master_key, renditions=tuple(hls.variants)) if hls else None,
    }


def job_event(record: JobRecord) -> JobEvent | None:
    """The event announcing ``record``'s end, or None when it has not ended (not COMPLETED or
    FAILED: e.g. a deletion that only flagged a running job)."""
    detail_type = DETAIL_TYPES.get(record.status)
    if detail_type is None:
        return None
    error = record.error if record.status is Status.FAILED else None
    ended = record.completed_at if record.status is Status.COMPLETED else record.failed_at
    detail = EventDetail(
        event_id=f"{record.job_id or '-'}:{record.status.value}:{record.rev}",
        job_id=record.job_id,
        user_id=record.user_id,
        video_id=record.video_id,
        status=record.status,
        source=_source(record),
        **_outputs(record),
        error=EventError.model_validate(error.model_dump()) if error else None,
        attempts=record.attempts,
        completed_at=isoformat(record.completed_at) if record.completed_at else None,
        failed_at=isoformat(record.failed_at) if record.failed_at else None,
        trace_id=record.trace_id,
    )
    return JobEvent(detail_type, detail, ended or record.updated_at or utcnow())


# ------------------------------------------------------------------- sending, for both adapters


def refused_entries(
    entries: Sequence[Mapping[str, Any]], response: Mapping[str, Any]
) -> list[tuple[Mapping[str, Any], str]]:
    """The entries a ``PutEvents`` answer did not accept, with the error code of each.

    The answer's ``Entries`` are in request order; a refused one carries ``ErrorCode`` instead of
    an ``EventId``. ``FailedEntryCount`` > 0 without a readable list refuses them all.
    """
    failed = int(response.get("FailedEntryCount") or 0)
    results = response.get("Entries")
    if not failed:
        return []
    if not isinstance(results, list) or len(results) != len(entries):
        return [(entry, "FailedEntryCount") for entry in entries]
    return [
        (entry, str(result.get("ErrorCode")))
        for entry, result in zip(entries, results, strict=True)
        if isinstance(result, Mapping) and result.get("ErrorCode")
    ]


def retry_delay_s(attempt: int, base_s: float, max_s: float = 2.0) -> float:
    """The wait before try ``attempt + 1`` (``attempt`` counts from 0): doubling, capped."""
    return float(min(max_s, base_s * 2**attempt))
