"""The dead-letter handler: an SQS-triggered Lambda on the jobs queue's DLQ.

A job message lands in the DLQ after ``maxReceiveCount`` receives that never settled it. For each
record this marks the job ``FAILED`` with ``error.code = retries_exhausted`` and the last cause the
worker recorded (the record's existing ``error``), so the product can tell the user. What happens
to each record is decided by ``transcoder.domain.transitions.dead_letter`` (the same rules every
writer uses) and stored under the record's ``rev``:

* ``COMPLETED`` records are never overwritten; neither is a job running under a live lease, a
  record already ``FAILED`` with a permanent reason or already marked ``retries_exhausted``, nor
  a newer upload's record;
* a newer upload's job that spent its receives waiting for an earlier upload's running job is
  returned in ``batchItemFailures`` while that job runs (SQS redelivers it later), then takes the
  record over as ``FAILED`` holding its message, so ``transcoder retry`` can run it.

Poison messages (the worker dead-letters bodies that are not job messages, with the message
attribute ``transcoder_reason``) are logged; when the body still names a user and a video, their
record is marked ``FAILED`` with ``invalid_message``.

A message from a newer producer (a ``version`` this release does not know) is left in the DLQ
(reported as a batch item failure) for a newer handler: it is never marked as poison.

No record shape makes the handler raise: a malformed record is logged and skipped.

Job events (``TRANSCODER_EVENT_BUS`` set): each record this handler marks ``FAILED`` is announced
as ``Video Failed`` (``enqueue_lambda.bus``), all of a batch in one bounded publish after its
writes; a failed announcement is logged (``event.publish_failed``), never a batch item failure:
the write it announces is done, and a redelivery would find nothing left to write.

Partial batch responses (the event source mapping needs ``ReportBatchItemFailures``): only records
that hit DynamoDB errors, or must wait as above, are returned; everything else is done or
deliberately skipped, and retrying it would change nothing.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from enqueue_lambda import bus
from enqueue_lambda.config import DeadLetterConfig
from enqueue_lambda.jsonlog import emit, get_logger
from enqueue_lambda.letters import message_attributes, poison_ids
from enqueue_lambda.records import RecordChanging, RecordTable
from transcoder.domain import transitions
from transcoder.domain.job import JobMessage, newer_schema
from transcoder.domain.record import JobRecord

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

log = get_logger("enqueue_lambda.dlq")


class Waiting(Exception):
    """The record cannot be settled yet; SQS redelivers the DLQ message later."""


class DeadLetterHandler:
    """Marks dead-lettered jobs; one instance (and client) per Lambda container."""

    def __init__(
        self, dynamodb: DynamoDBClient, table: str, events: bus.EventBus | None = None
    ) -> None:
        self._table = RecordTable(dynamodb, table)
        self._events = events
        self._ended: list[JobRecord] = []  # marked FAILED during this batch

    def _announce(self, record: JobRecord) -> None:
        self._ended.append(record)

    def handle(self, event: Any) -> dict[str, list[dict[str, str]]]:
        try:
            return self._handle(event)
        finally:
            ended, self._ended = self._ended, []
            if ended and self._events is not None:
                self._events.publish(ended)

    def _handle(self, event: Any) -> dict[str, list[dict[str, str]]]:
        records = event.get("Records") if isinstance(event, Mapping) else None
        records = records if isinstance(records, list) else []
        failures: list[dict[str, str]] = []
        for record in records:
            if not isinstance(record, Mapping):
                emit(log, logging.WARNING, "dlq.malformed", record=str(record)[:200])
                continue
            message_id = str(record.get("messageId", ""))
            try:
                self._one(record, message_id)
            except Waiting as exc:
                failures.append({"itemIdentifier": message_id})
                emit(log, logging.INFO, "dlq.waiting", message_id=message_id, reason=str(exc))
            except (ClientError, BotoCoreError, RecordChanging) as exc:
                failures.append({"itemIdentifier": message_id})
                emit(
                    log, logging.ERROR, "dlq.transient_error", message_id=message_id, error=str(exc)
                )
        emit(log, logging.INFO, "dlq.done", records=len(records), failures=len(failures))
        return {"batchItemFailures": failures}

    def _one(self, record: Mapping[str, Any], message_id: str) -> None:
        body = str(record.get("body", ""))
        version = newer_schema(body)
        if version is not None:
            raise Waiting(f"message version {version} is newer than this handler: left for it")
        try:
            message = JobMessage.model_validate_json(body)
        except ValueError as exc:  # pydantic's ValidationError is a ValueError
            self._poison(body, message_attributes(record), message_id, exc)
            return
        attributes = record.get("attributes")
        receives = (
            attributes.get("ApproximateReceiveCount") if isinstance(attributes, Mapping) else None
        )
        fields = {"message_id": message_id, "job_id": message.job_id, "receives": receives}
        fields.update(user_id=message.user_id, video_id=message.video_id)
        outcome = self._table.transact(
            message.user_id,
            message.video_id,
            lambda current: transitions.dead_letter(current, message, self._table.now()),
        )
        if isinstance(outcome, JobRecord):
            error = outcome.error.message if outcome.error else ""
            emit(log, logging.WARNING, "dlq.marked", error=error, **fields)
            self._announce(outcome)
            return
        if outcome.verdict is transitions.Verdict.WAIT:
            raise Waiting(outcome.reason)
        emit(log, logging.INFO, "dlq.skipped", reason=outcome.reason, **fields)

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
        outcome = self._table.transact(
            ids[0],
            ids[1],
            lambda current: transitions.poison(current, ids, detail, self._table.now()),
        )
        recorded = isinstance(outcome, JobRecord)
        emit(log, logging.INFO, "dlq.poison_recorded", recorded=recorded, video_id=ids[1])
        if isinstance(outcome, JobRecord):
            self._announce(outcome)


def build(
    table: str,
    *,
    endpoint_url: str | None = None,
    region: str | None = None,
    event_bus: str | None = None,
) -> DeadLetterHandler:
    boto_config = Config(retries={"mode": "standard", "max_attempts": 5}, region_name=region)
    client = boto3.client("dynamodb", endpoint_url=endpoint_url, config=boto_config)
    events = bus.build(event_bus, endpoint_url=endpoint_url, region=region)
    return DeadLetterHandler(client, table, events)


_handler: DeadLetterHandler | None = None


def _cold_start() -> DeadLetterHandler:
    global _handler  # noqa: PLW0603 - one client per Lambda container
    if _handler is None:
        config = DeadLetterConfig.from_env(os.environ)
        _handler = build(config.table, event_bus=config.event_bus)
    return _handler


def handler(event: Mapping[str, Any], context: Any) -> dict[str, list[dict[str, str]]]:
    """Lambda entry point (SQS event source on the DLQ, with ``ReportBatchItemFailures``)."""
    return _cold_start().handle(event)


if os.environ.get("AWS_LAMBDA_FUNCTION_NAME"):
    _cold_start()  # fail the init phase, not the first batch, when misconfigured
