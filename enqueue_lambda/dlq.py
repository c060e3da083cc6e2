"""The dead-letter handler: an SQS-triggered Lambda on the jobs queue's DLQ.

A job message lands in the DLQ after ``maxReceiveCount`` receives that never settled it. For each
record this marks the job ``FAILED`` with ``error.code = retries_exhausted`` and the last cause the
worker recorded (the record's existing ``error``), so the product can tell the user. What happens
to each record is decided by ``verdict.judge`` and re-checked by the conditional write:

* ``COMPLETED`` records are never overwritten; neither is a job running under a live lease, a
  record already ``FAILED`` with a permanent reason or already marked ``retries_exhausted``, nor
  a newer upload's record;
* a newer upload's job that spent its receives waiting for an earlier upload's running job is
  returned in ``batchItemFailures`` while that job runs (SQS redelivers it later), then takes the
  record over as ``FAILED`` holding its message, so ``transcoder retry`` can run it.

Poison messages (the worker dead-letters bodies that are not job messages, with the message
attribute ``transcoder_reason``) are logged; when the body still names a user and a video, their
record is marked ``FAILED`` with ``invalid_message``.

Partial batch responses (the event source mapping needs ``ReportBatchItemFailures``): only records
that hit DynamoDB errors, or must wait as above, are returned; everything else is done or
deliberately skipped, and retrying it would change nothing.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from enqueue_lambda.config import table_from_env
from enqueue_lambda.jsonlog import emit, get_logger
from enqueue_lambda.records import CONDITION_FAILED, LIVE_LEASE
from enqueue_lambda.verdict import (
    Verdict,
    adopted_error,
    exhausted_error,
    judge,
    message_attributes,
    poison_ids,
)
from transcoder.domain.job import (
    JobMessage,
    Reason,
    Status,
    from_item,
    isoformat,
    record_key,
    to_attr,
    utcnow,
)

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

log = get_logger("enqueue_lambda.dlq")
MARK_CONDITION = (  # judge() decided on a read; the write re-checks it
    f"job_id = :job AND #status <> :completed AND NOT {LIVE_LEASE} "
    "AND NOT (#status = :failed AND #error.retryable = :false)"
)


class Waiting(Exception):
    """The record cannot be settled yet; SQS redelivers the DLQ message later."""


class DeadLetterHandler:
    """Marks dead-lettered jobs; one instance (and client) per Lambda container."""

    def __init__(self, dynamodb: DynamoDBClient, table: str) -> None:
        self._dynamodb = dynamodb
        self._table = table

    def handle(self, event: Mapping[str, Any]) -> dict[str, list[dict[str, str]]]:
        failures: list[dict[str, str]] = []
        records = event.get("Records") or []
        for record in records:
            message_id = str(record.get("messageId", ""))
            try:
                self._one(record, message_id)
            except Waiting as exc:
                failures.append({"itemIdentifier": message_id})
                emit(log, logging.INFO, "dlq.waiting", message_id=message_id, reason=str(exc))
            except (ClientError, BotoCoreError) as exc:
                failures.append({"itemIdentifier": message_id})
                emit(
                    log, logging.ERROR, "dlq.transient_error", message_id=message_id, error=str(exc)
                )
        emit(log, logging.INFO, "dlq.done", records=len(records), failures=len(failures))
        return {"batchItemFailures": failures}

    def _one(self, record: Mapping[str, Any], message_id: str) -> None:
        body = str(record.get("body", ""))
        try:
            message = JobMessage.model_validate_json(body)
        except ValueError as exc:  # pydantic's ValidationError is a ValueError
            self._poison(body, message_attributes(record), message_id, exc)
            return
        receives = (record.get("attributes") or {}).get("ApproximateReceiveCount")
        fields = {"message_id": message_id, "job_id": message.job_id, "receives": receives}
        fields.update(user_id=message.user_id, video_id=message.video_id)
        current = self._get(message.user_id, message.video_id)
        verdict, reason = judge(current, message, time.time())
        if verdict is Verdict.WAIT:
            raise Waiting(reason)
        if verdict is Verdict.SKIP or current is None:
            emit(log, logging.INFO, "dlq.skipped", reason=reason, **fields)
            return
        if verdict is Verdict.MARK:
            error = exhausted_error(current)
            done = self._mark_exhausted(message, error)
        else:
            error = adopted_error()
            done = self._adopt(message, body, current, error)
        event = f"dlq.{verdict.value}ed" if done else "dlq.skipped"
        emit(log, logging.WARNING, event, error=error["message"], reason=reason, **fields)

    def _poison(
        self, body: str, attributes: dict[str, str], message_id: str, exc: ValueError
    ) -> None:
        reason = attributes.get("transcoder_reason", "unparseable")
        detail = attributes.get("transcoder_detail") or str(exc).splitlines()[0]
        fields = {"message_id": message_id, "reason": reason, "detail": detail}
        emit(log, logging.WARNING, "dlq.poison", body=body[:500], **fields)
        ids = poison_ids(body)
        if ids is None:
            return
        recorded = self._mark_poison(*ids, detail=detail)
        emit(log, logging.INFO, "dlq.poison_recorded", recorded=recorded, video_id=ids[1])

    def _get(self, user_id: str, video_id: str) -> dict[str, Any] | None:
        item = self._dynamodb.get_item(
            TableName=self._table, Key=record_key(user_id, video_id), ConsistentRead=True
        ).get("Item")
        return from_item(item) if item else None

    def _mark_exhausted(self, message: JobMessage, error: dict[str, Any]) -> bool:
        return self._update(
            message.user_id,
            message.video_id,
            "SET #status = :failed, #error = :error, updated_at = :now, failed_at = :now, "
            "dead_lettered_at = :now REMOVE lease_owner, lease_expires_at",
            MARK_CONDITION,
            job=message.job_id,
            error=error,
            completed=Status.COMPLETED.value,
            processing=Status.PROCESSING.value,
            false=False,
        )

    def _adopt(
        self, message: JobMessage, body: str, current: Mapping[str, Any], error: dict[str, Any]
    ) -> bool:
        """Turn an earlier upload's settled record into this job's, ``FAILED`` and holding its
        message (so ``transcoder retry`` can run it); only if that record has not moved."""
        theirs = current.get("job_id")
        owner = "job_id = :theirs" if theirs else "attribute_not_exists(job_id)"
        values: dict[str, Any] = {"theirs": theirs} if theirs else {}
        return self._update(
            message.user_id,
            message.video_id,
            "SET #status = :failed, #error = :error, job_id = :job, trace_id = :trace, "
            "submitted_at = :submitted, source_bucket = :bucket, source_key = :key, "
            "message = :body, enqueued = :true, attempts = :zero, progress = :zero, "
            "renditions = :empty, created_at = :now, updated_at = :now, failed_at = :now, "
            "dead_lettered_at = :now REMOVE #source, completed_at, started_at, requeued_at, "
            "lease_owner, lease_expires_at, message_id, source_size, source_sequencer",
            f"{owner} AND NOT {LIVE_LEASE}",
            error=error,
            job=message.job_id,
            trace=message.trace_id,
            submitted=message.submitted_at,
            bucket=message.bucket,
            key=message.key,
            body=body,
            true=True,
            zero=0,
            empty={},
            processing=Status.PROCESSING.value,
            **values,
        )

    def _mark_poison(self, user_id: str, video_id: str, job_id: str | None, detail: str) -> bool:
        # A record is created for a video that has none; an existing record is touched only when
        # it is this very job's and nothing more final happened to it.
        values: dict[str, Any] = {"user": user_id, "video": video_id, "zero": 0}
        condition = "attribute_not_exists(pk)"
        if job_id is not None:
            condition += f" OR (job_id = :job AND #status <> :completed AND NOT {LIVE_LEASE})"
            values.update(job=job_id, completed=Status.COMPLETED.value)
            values.update(processing=Status.PROCESSING.value)
        error = {"code": Reason.INVALID_MESSAGE.value, "message": detail[:1000], "retryable": False}
        return self._update(
            user_id,
            video_id,
            "SET #status = :failed, #error = :error, user_id = :user, video_id = :video, "
            "updated_at = :now, failed_at = :now, created_at = if_not_exists(created_at, :now), "
            "attempts = if_not_exists(attempts, :zero)",
            condition,
            error=error,
            **values,
        )

    def _update(
        self, user_id: str, video_id: str, update: str, condition: str, **values: Any
    ) -> bool:
        """A conditional update; False when the condition said no."""
        values.update(failed=Status.FAILED.value, now=isoformat(utcnow()))
        if ":epoch" in condition:
            values["epoch"] = time.time()
        aliases = {"#status": "status", "#error": "error", "#source": "source"}
        names = {a: name for a, name in aliases.items() if a in update + condition}
        try:
            self._dynamodb.update_item(
                TableName=self._table,
                Key=record_key(user_id, video_id),
                UpdateExpression=update,
                ConditionExpression=condition,
                ExpressionAttributeNames=names,
                ExpressionAttributeValues={f":{k}": to_attr(v) for k, v in values.items()},
            )
        except ClientError as exc:
            if exc.response["Error"]["Code"] != CONDITION_FAILED:
                raise
            return False
        return True


def build(
    table: str, *, endpoint_url: str | None = None, region: str | None = None
) -> DeadLetterHandler:
    boto_config = Config(retries={"mode": "standard", "max_attempts": 5}, region_name=region)
    client = boto3.client("dynamodb", endpoint_url=endpoint_url, config=boto_config)
    return DeadLetterHandler(client, table)


_handler: DeadLetterHandler | None = None


def _cold_start() -> DeadLetterHandler:
    global _handler  # noqa: PLW0603 - one client per Lambda container
    if _handler is None:
        _handler = build(table_from_env(os.environ))
    return _handler


def handler(event: Mapping[str, Any], context: Any) -> dict[str, list[dict[str, str]]]:
    """Lambda entry point (SQS event source on the DLQ, with ``ReportBatchItemFailures``)."""
    return _cold_start().handle(event)


if os.environ.get("AWS_LAMBDA_FUNCTION_NAME"):
    _cold_start()  # fail the init phase, not the first batch, when misconfigured
