"""The job record in DynamoDB: claims, fenced writes, reads. One adapter, one table.

The record is the fence. A worker may write only while it owns the current attempt::

    ConditionExpression: lease_owner = :me AND attempts = :attempt AND #status = PROCESSING

If another worker claimed the job after our lease lapsed, ``attempts`` moved on and every write
we try fails its condition; we translate that into ``LeaseLost`` and write nothing else. Claims
are read-decide-write: ``decide_claim`` (pure) looks at the record, and the write is conditional on
the record's revision (``rev``) not having moved since we read it, so two receivers of the same
message cannot both win.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from transcoder.aws.clients import error_code, translated
from transcoder.domain.errors import LeaseLost
from transcoder.domain.job import (
    STATUS_INDEX,
    ErrorInfo,
    JobMessage,
    RenditionRecord,
    SourceFacts,
    Status,
    from_item,
    isoformat,
    record_key,
    to_attr,
    utcnow,
)

if TYPE_CHECKING:
    from types_aiobotocore_dynamodb import DynamoDBClient

FAILED_CONDITION = "ConditionalCheckFailedException"
# The fence on every write a worker makes while it holds a job (see the module docstring).
FENCE = "lease_owner = :me AND attempts = :attempt AND #status = :processing"


class Verdict(StrEnum):
    CLAIM = "claim"  # start (or take over) this job
    DUPLICATE = "duplicate"  # already COMPLETED: acknowledge, do nothing
    ALREADY_FAILED = "already_failed"  # permanently FAILED: acknowledge, do nothing
    HELD = "held"  # another worker holds a live lease: back off
    SUPERSEDED = "superseded"  # a newer upload of this video owns the record: drop


@dataclass(frozen=True, slots=True)
class ClaimDecision:
    verdict: Verdict
    fresh: bool = False  # the record belongs to another (older) job: start from attempt 1
    lease_remaining_s: float = 0.0


def decide_claim(record: dict[str, Any] | None, message: JobMessage, now: float) -> ClaimDecision:
    """What to do with a delivery, given the record as it stands (pure)."""
    if record is None:
        return ClaimDecision(Verdict.CLAIM, fresh=True)
    status = record.get("status")
    live_lease = status == Status.PROCESSING and float(record.get("lease_expires_at", 0)) > now
    remaining = float(record.get("lease_expires_at", 0)) - now if live_lease else 0.0
    if record.get("job_id") != message.job_id:
        if str(record.get("submitted_at", "")) > isoformat(message.submitted_at):
            return ClaimDecision(Verdict.SUPERSEDED)
        if live_lease:
            return ClaimDecision(Verdict.HELD, lease_remaining_s=remaining)
        return ClaimDecision(Verdict.CLAIM, fresh=True)
    if status == Status.COMPLETED:
        return ClaimDecision(Verdict.DUPLICATE)
    if status == Status.FAILED and not (record.get("error") or {}).get("retryable"):
        return ClaimDecision(Verdict.ALREADY_FAILED)
    if live_lease:
        return ClaimDecision(Verdict.HELD, lease_remaining_s=remaining)
    return ClaimDecision(Verdict.CLAIM)


@dataclass(frozen=True, slots=True)
class Lease:
    """Proof of ownership of one attempt; every fenced write carries it."""

    user_id: str
    video_id: str
    owner: str
    attempt: int


def _values(**values: Any) -> dict[str, Any]:
    return {f":{name}": to_attr(value) for name, value in values.items()}


class JobStore:
    """Reads and conditional writes of job records."""

    def __init__(self, client: DynamoDBClient, table: str) -> None:
        self._client = client
        self._table = table

    async def get(self, user_id: str, video_id: str) -> dict[str, Any] | None:
        with translated("dynamodb.get_item"):
            response = await self._client.get_item(
                TableName=self._table, Key=record_key(user_id, video_id), ConsistentRead=True
            )
        item = response.get("Item")
        return from_item(item) if item else None

    async def claim(
        self, message: JobMessage, record: dict[str, Any] | None, *, owner: str, lease_s: float
    ) -> Lease | None:
        """Take the job; None when the record moved since it was read (someone else won)."""
        now = utcnow()
        fresh = record is None or record.get("job_id") != message.job_id
        attempt = 1 if fresh or record is None else int(record.get("attempts", 0)) + 1
        values = _values(
            processing=Status.PROCESSING,
            me=owner,
            attempt=attempt,
            expires=time.time() + lease_s,
            now=now,
            job=message.job_id,
            trace=message.trace_id,
            submitted=message.submitted_at,
            bucket=message.bucket,
            key=message.key,
            user=message.user_id,
            video=message.video_id,
            zero=0,
            one=1,
        )
        update = (
            "SET #status = :processing, lease_owner = :me, attempts = :attempt, "
            "lease_expires_at = :expires, updated_at = :now, started_at = :now, job_id = :job, "
            "trace_id = :trace, submitted_at = :submitted, source_bucket = :bucket, "
            "source_key = :key, user_id = :user, video_id = :video, "
            "progress = :zero, created_at = if_not_exists(created_at, :now), "
            "rev = if_not_exists(rev, :zero) + :one"
        )
        if fresh:
            update += ", renditions = :empty REMOVE #error, #source, completed_at"
            values.update(_values(empty={}))
        if record is None:
            condition = "attribute_not_exists(pk)"
        elif "rev" not in record:  # written by the enqueue path, never claimed yet
            condition = "attribute_not_exists(rev)"
        else:
            condition = "rev = :rev"
            values.update(_values(rev=int(record["rev"])))
        key = record_key(message.user_id, message.video_id)
        if not await self._update_if("claim", key, update, condition, values):
            return None
        return Lease(message.user_id, message.video_id, owner, attempt)

    async def renew(self, lease: Lease, *, lease_s: float, progress: int) -> None:
        await self._fenced(
            lease,
            "SET lease_expires_at = :expires, progress = :progress, updated_at = :now",
            expires=time.time() + lease_s,
            progress=progress,
        )

    async def confirm(self, lease: Lease) -> None:
        """Raise LeaseLost unless ``lease`` still owns the record (a fenced no-op write)."""
        await self._fenced(lease, "SET updated_at = :now")

    async def record_source(self, lease: Lease, source: SourceFacts) -> None:
        await self._fenced(
            lease, "SET #source = :source, updated_at = :now", source=source.model_dump()
        )

    async def mark_completed(self, lease: Lease, renditions: dict[str, RenditionRecord]) -> None:
        await self._fenced(
            lease,
            "SET #status = :completed, renditions = :renditions, progress = :hundred, "
            "updated_at = :now, completed_at = :now REMOVE lease_owner, lease_expires_at, #error",
            completed=Status.COMPLETED,
            renditions={name: r.model_dump(exclude_none=True) for name, r in renditions.items()},
            hundred=100,
        )

    async def mark_failed(self, lease: Lease, error: ErrorInfo) -> None:
        await self._fenced(
            lease,
            "SET #status = :failed, #error = :error, updated_at = :now, failed_at = :now "
            "REMOVE lease_owner, lease_expires_at",
            failed=Status.FAILED,
            error=error.model_dump(),
        )

    async def release(self, lease: Lease, error: ErrorInfo | None) -> None:
        """Hand the job back (``PROCESSING -> QUEUED``), recording why when there was an error."""
        update = "SET #status = :queued, updated_at = :now"
        extra: dict[str, Any] = {"queued": Status.QUEUED}
        if error is not None:
            update += ", #error = :error"
            extra["error"] = error.model_dump()
        await self._fenced(lease, update + " REMOVE lease_owner, lease_expires_at", **extra)

    async def _fenced(self, lease: Lease, update: str, **extra: Any) -> None:
        update = update.replace("SET ", "SET rev = rev + :one, ", 1)
        values = _values(
            me=lease.owner,
            attempt=lease.attempt,
            processing=Status.PROCESSING,
            now=utcnow(),
            one=1,
            **extra,
        )
        key = record_key(lease.user_id, lease.video_id)
        if not await self._update_if("fenced", key, update, FENCE, values):
            raise LeaseLost(f"attempt {lease.attempt} no longer owns the record")

    async def _update_if(
        self,
        operation: str,
        key: dict[str, dict[str, str]],
        update: str,
        condition: str,
        values: dict[str, Any],
    ) -> bool:
        """One conditional UpdateItem; False when its condition failed (the record moved on)."""
        try:
            with translated(f"dynamodb.update_item({operation})"):
                await self._client.update_item(
                    TableName=self._table,
                    Key=key,
                    UpdateExpression=update,
                    ConditionExpression=condition,
                    ExpressionAttributeNames=self._names(f"{update} {condition}"),
                    ExpressionAttributeValues=values,
                )
        except ClientError as exc:
            if error_code(exc) == FAILED_CONDITION:
                return False
            raise
        return True

    async def list_by_status(
        self, status: Status, *, updated_before: str | None = None, limit: int = 100
    ) -> list[dict[str, Any]]:
        """Records in ``status`` (oldest first), through the status index."""
        condition = "#status = :status"
        values = _values(status=status)
        if updated_before:
            condition += " AND updated_at < :before"
            values.update(_values(before=updated_before))
        items: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {}
        while len(items) < limit:
            with translated("dynamodb.query"):
                response = await self._client.query(
                    TableName=self._table,
                    IndexName=STATUS_INDEX,
                    KeyConditionExpression=condition,
                    ExpressionAttributeNames={"#status": "status"},
                    ExpressionAttributeValues=values,
                    Limit=limit - len(items),
                    **kwargs,
                )
            items.extend(from_item(item) for item in response.get("Items", []))
            if "LastEvaluatedKey" not in response:
                break
            kwargs["ExclusiveStartKey"] = response["LastEvaluatedKey"]
        return items

    @staticmethod
    def _names(expression: str) -> dict[str, str]:
        reserved = {"#status": "status", "#error": "error", "#source": "source"}
        return {alias: name for alias, name in reserved.items() if alias in expression}

    async def requeue(
        self, user_id: str, video_id: str, job_id: str, *, failed_at: str | None = None
    ) -> bool:
        """``FAILED -> QUEUED`` for an operator's redrive or retry; False when the record moved on.

        Conditional on the record still being this job's, ``FAILED`` with a retryable cause and,
        when ``failed_at`` is given, not failed again since it was read. ``attempts`` is kept (it
        is the lease fence and only grows) and so is ``error``, the last cause, until a worker
        settles the job again.
        """
        condition = "job_id = :job AND #status = :failed AND #error.retryable = :true"
        values = _values(
            job=job_id, failed=Status.FAILED, true=True, queued=Status.QUEUED, now=utcnow(), zero=0
        )
        if failed_at is not None:
            condition += " AND failed_at = :failed_at"
            values.update(_values(failed_at=failed_at))
        update = (
            "SET #status = :queued, updated_at = :now, requeued_at = :now, progress = :zero "
            "REMOVE failed_at, lease_owner, lease_expires_at"
        )
        return await self._update_if(
            "requeue", record_key(user_id, video_id), update, condition, values
        )
