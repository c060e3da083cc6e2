"""The enqueue Lambda's writes to the job record (boto3's low-level DynamoDB client).

One record per video (``pk = USER#{userId}``, ``sk = VIDEO#{videoId}``) describes its latest
upload. Every write is a conditional put whose condition is the whole policy:

* the same job (same ``job_id``: same bucket, key and ETag/version) is never written twice, so a
  duplicated notification is a no-op;
* a running job's live lease (``PROCESSING`` and ``lease_expires_at`` in the future) is never
  replaced: its worker would lose its fence mid-encode;
* an older upload never replaces a newer one: S3's per-key ``sequencer`` orders notifications
  that arrive out of order.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from enqueue_lambda.events import Upload
from transcoder.domain.job import (
    JobMessage,
    RawKey,
    Reason,
    Status,
    derive_job_id,
    from_item,
    record_key,
    to_attr,
    utcnow,
)

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

CONDITION_FAILED = "ConditionalCheckFailedException"
LIVE_LEASE = "(#status = :processing AND lease_expires_at > :epoch)"
OTHER_JOB = "(attribute_not_exists(job_id) OR job_id <> :job)"
OLDER_UPLOAD = "(attribute_not_exists(source_sequencer) OR source_sequencer < :seq)"


class Placement(StrEnum):
    """What placing a job's record decided; all but ``DUPLICATE`` and ``STALE`` send a message."""

    CREATED = "created"  # the record is this job's now
    RESEND = "resend"  # this job's record exists but its message was never confirmed sent
    HELD = "held"  # an older job holds a live lease: its record stays, our message waits
    DUPLICATE = "duplicate"  # this exact job is already recorded and sent
    STALE = "stale"  # a newer upload of this video is already recorded


def classify(
    current: Mapping[str, Any] | None, job_id: str, sequencer: str | None, now: float
) -> Placement | None:
    """Why the conditional put failed, from the record as it stands; None: it changed, retry."""
    if current is None:
        return None
    if current.get("job_id") == job_id:
        return Placement.RESEND if current.get("enqueued") is False else Placement.DUPLICATE
    theirs = current.get("source_sequencer")
    if sequencer and isinstance(theirs, str) and theirs >= sequencer:
        return Placement.STALE
    live = current.get("status") == Status.PROCESSING.value
    if live and float(current.get("lease_expires_at", 0)) > now:
        return Placement.HELD
    return None


def _item(user_id: str, video_id: str, values: Mapping[str, Any]) -> dict[str, Any]:
    attrs = {name: to_attr(value) for name, value in values.items() if value is not None}
    return {**record_key(user_id, video_id), **attrs}


def _guard(job_id: str | None, seq: str | None) -> tuple[str, dict[str, Any]]:
    """The put condition and its values: see the module docstring."""
    clauses = [f"NOT {LIVE_LEASE}"]
    values: dict[str, Any] = {":processing": Status.PROCESSING.value, ":epoch": time.time()}
    if job_id:
        clauses.append(OTHER_JOB)
        values[":job"] = job_id
    if seq:
        clauses.append(OLDER_UPLOAD)
        values[":seq"] = seq
    condition = f"attribute_not_exists(pk) OR ({' AND '.join(clauses)})"
    return condition, {name: to_attr(value) for name, value in values.items()}


class RecordWriter:
    """Creates QUEUED and rejected records and confirms sends."""

    def __init__(self, dynamodb: DynamoDBClient, table: str) -> None:
        self._dynamodb = dynamodb
        self._table = table

    def place(self, message: JobMessage, upload: Upload) -> Placement:
        """Create this job's ``QUEUED`` record, or say why the existing record stays."""
        for _ in range(3):
            if self._put(self._queued(message, upload), message.job_id, upload.sequencer):
                return Placement.CREATED
            current = self._get(message.user_id, message.video_id)
            verdict = classify(current, message.job_id, upload.sequencer, time.time())
            if verdict is not None:
                return verdict
        raise RuntimeError(f"record for job {message.job_id} kept changing under the put")

    def reject(self, upload: Upload, raw: RawKey, reason: Reason, detail: str) -> bool:
        """Record a terminal ``FAILED`` for a rejected upload; False when a record had priority."""
        job_id = derive_job_id(
            upload.bucket, upload.key, version_id=upload.version_id, etag=upload.etag
        )
        now = utcnow()
        values = {
            "status": Status.FAILED.value,
            "job_id": job_id,
            "user_id": raw.user_id,
            "video_id": raw.video_id,
            "source_bucket": upload.bucket,
            "source_key": upload.key,
            "source_size": upload.size,
            "source_sequencer": upload.sequencer,
            "submitted_at": now,
            "created_at": now,
            "updated_at": now,
            "failed_at": now,
            "attempts": 0,
            "error": {"code": reason.value, "message": detail, "retryable": False},
        }
        return self._put(_item(raw.user_id, raw.video_id, values), job_id, upload.sequencer)

    def mark_enqueued(self, message: JobMessage, message_id: str) -> None:
        try:
            self._dynamodb.update_item(
                TableName=self._table,
                Key=record_key(message.user_id, message.video_id),
                UpdateExpression="SET enqueued = :true, message_id = :id",
                ConditionExpression="job_id = :job",
                ExpressionAttributeValues={
                    ":true": {"BOOL": True},
                    ":id": to_attr(message_id),
                    ":job": to_attr(message.job_id),
                },
            )
        except ClientError as exc:
            if exc.response["Error"]["Code"] != CONDITION_FAILED:
                raise

    def _queued(self, message: JobMessage, upload: Upload) -> dict[str, Any]:
        now = utcnow()
        values = {
            "status": Status.QUEUED.value,
            "job_id": message.job_id,
            "user_id": message.user_id,
            "video_id": message.video_id,
            "source_bucket": message.bucket,
            "source_key": message.key,
            "source_size": upload.size,
            "source_sequencer": upload.sequencer,
            "trace_id": message.trace_id,
            "submitted_at": message.submitted_at,
            "created_at": now,
            "updated_at": now,
            "attempts": 0,
            "progress": 0,
            "renditions": {},
            "enqueued": False,
            "message": message.model_dump_json(),
        }
        return _item(message.user_id, message.video_id, values)

    def _put(self, item: dict[str, Any], job_id: str | None, seq: str | None) -> bool:
        condition, values = _guard(job_id, seq)
        try:
            self._dynamodb.put_item(
                TableName=self._table,
                Item=item,
                ConditionExpression=condition,
                ExpressionAttributeNames={"#status": "status"},
                ExpressionAttributeValues=values,
            )
        except ClientError as exc:
            if exc.response["Error"]["Code"] != CONDITION_FAILED:
                raise
            return False
        return True

    def _get(self, user_id: str, video_id: str) -> dict[str, Any] | None:
        item = self._dynamodb.get_item(
            TableName=self._table, Key=record_key(user_id, video_id), ConsistentRead=True
        ).get("Item")
        return from_item(item) if item else None
