"""The enqueue Lambda: an S3 ``ObjectCreated`` event under ``raw/`` becomes a job and a message.

Imports only ``transcoder.domain.job`` and boto3 (through this package) so the Lambda bundle stays
small.
For each record of the event (``events.uploads_from_event``):

1. Decode the key exactly as S3 encodes it in events and parse ``raw/{userId}/{videoId}.{ext}``
   strictly (``transcoder.domain.job.parse_raw_key``).
2. Reject bad keys, empty objects and objects over the size limit: the rejection is written to
   DynamoDB as a terminal ``FAILED`` record with a reason code (when the key names a user and a
   video) and logged. Nothing is raised, so Lambda never retries a bad upload forever.
3. Place the ``QUEUED`` record with a conditional put (``records.RecordWriter.place``): the same
   upload twice is a no-op, a new upload of the same video replaces a finished or queued record
   but never a running job's live lease, and an out-of-order older notification changes nothing.
4. Send the messages with ``SendMessageBatch`` (10 per call), retrying only the failed entries,
   then mark each record ``enqueued``. A record that exists but was never marked enqueued (a
   crash or an SQS outage between put and send) is sent again when Lambda retries the event.

Transient AWS failures do raise, after every other record has been handled: Lambda then retries
the event, and everything already done is a no-op the second time.

Job events (``TRANSCODER_EVENT_BUS`` set): a rejection recorded as ``FAILED``, and a deletion that
fails a job not yet running (``source_deleted``), end the job here, so this Lambda announces them
(``Video Failed``, ``enqueue_lambda.bus``), in one bounded publish per invocation once every record
of the event is handled. A deletion that only flags a running job announces nothing: that job
fails at its publish fence and the worker announces it.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from enqueue_lambda import bus
from enqueue_lambda.config import ConfigError, EnqueueConfig
from enqueue_lambda.events import Upload, s3_event_for, uploads_from_event
from enqueue_lambda.jsonlog import emit, get_logger
from enqueue_lambda.records import RecordChanging, RecordWriter, sends_message
from transcoder.domain.job import (
    RAW_PREFIX,
    ErrorInfo,
    InvalidKeyError,
    JobMessage,
    RawKey,
    Reason,
    Status,
    parse_raw_key,
)
from transcoder.domain.record import JobRecord
from transcoder.domain.transitions import Refusal, Verdict

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_sqs import SQSClient

__all__ = [  # config and events are re-exported: callers know this module only
    "ConfigError",
    "EnqueueConfig",
    "EnqueueIncomplete",
    "Enqueuer",
    "Report",
    "build",
    "handler",
    "s3_event_for",
    "uploads_from_event",
]

log = get_logger("enqueue_lambda")
SEND_ATTEMPTS = 4
SEND_RETRY_BASE_S = 0.2
BATCH_SIZE = 10  # SendMessageBatch's limit


class EnqueueIncomplete(RuntimeError):
    """Some records hit transient AWS errors; raised so Lambda retries the whole event."""


@dataclass
class Report:
    """What one invocation did; returned by the handler and logged as ``enqueue.done``."""

    queued: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    held: list[str] = field(default_factory=list)
    stale: list[str] = field(default_factory=list)
    rejected: list[dict[str, str]] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    errors: list[dict[str, str]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "queued": self.queued,
            "duplicates": self.duplicates,
            "held": self.held,
            "stale": self.stale,
            "rejected": self.rejected,
            "deleted": self.deleted,
            "ignored": self.ignored,
            "errors": self.errors,
        }


class Enqueuer:
    """Turns uploads into jobs. Clients are created once per Lambda container (``build``)."""

    def __init__(
        self,
        config: EnqueueConfig,
        dynamodb: DynamoDBClient,
        sqs: SQSClient,
        events: bus.EventBus | None = None,
    ) -> None:
        self.config = config
        self._records = RecordWriter(dynamodb, config.table)
        self._sqs = sqs
        self._events = events
        self._ended: list[JobRecord] = []  # written FAILED during this invocation

    def _announce(self, outcome: JobRecord | Refusal) -> None:
        """Remember a record this Lambda just wrote; ``handle`` announces the ones that ended."""
        if isinstance(outcome, JobRecord) and outcome.status is Status.FAILED:
            self._ended.append(outcome)

    def handle(self, event: Any, trace_id: str | None = None) -> Report:
        try:
            return self._handle(event, trace_id)
        finally:
            ended, self._ended = self._ended, []
            if ended and self._events is not None:
                self._events.publish(ended)

    def _handle(self, event: Any, trace_id: str | None) -> Report:
        uploads, ignored = uploads_from_event(event)
        report = Report(ignored=ignored)
        for note in ignored:
            emit(log, logging.INFO, "enqueue.ignored", reason=note)
        pending: list[JobMessage] = []
        for upload in uploads:
            message = self._admit_safely(upload, report, trace_id or uuid.uuid4().hex)
            if message is not None:
                pending.append(message)
        for start in range(0, len(pending), BATCH_SIZE):
            self._send_batch(pending[start : start + BATCH_SIZE], report)
        emit(log, logging.INFO, "enqueue.done", **report.as_dict())
        if report.errors:
            raise EnqueueIncomplete(f"{len(report.errors)} record(s) hit transient errors")
        return report

    def _admit_safely(self, upload: Upload, report: Report, trace_id: str) -> JobMessage | None:
        try:
            return self._admit(upload, report, trace_id)
        except (ClientError, BotoCoreError, RecordChanging) as exc:
            report.errors.append({"key": upload.key, "error": str(exc)})
            emit(log, logging.ERROR, "enqueue.error", key=upload.key, error=str(exc))
            return None
        except ValueError as exc:  # a field S3 would never send (e.g. a 2-letter bucket name)
            note = f"{upload.key}: not a usable upload: {str(exc).splitlines()[0]}"
            report.ignored.append(note)
            emit(log, logging.WARNING, "enqueue.ignored", key=upload.key, reason=note)
            return None

    def _admit(self, upload: Upload, report: Report, trace_id: str) -> JobMessage | None:
        if self.config.bucket and upload.bucket != self.config.bucket:
            note = f"bucket {upload.bucket!r} is not {self.config.bucket!r}"
            report.ignored.append(f"{upload.bucket}/{upload.key}: {note}")
            emit(log, logging.WARNING, "enqueue.ignored", key=upload.key, reason=note)
            return None
        if not upload.key.startswith(RAW_PREFIX):
            report.ignored.append(upload.key)
            emit(log, logging.INFO, "enqueue.ignored", key=upload.key, reason="outside raw/")
            return None
        if upload.removed:
            self._deleted(upload, report)
            return None
        raw = self._check(upload, report)
        if raw is None:
            return None
        message = self._message(upload, raw, trace_id)
        placed = self._records.place(message, upload.size)
        self._report(message, placed, report)
        return message if sends_message(placed) else None

    def _message(self, upload: Upload, raw: RawKey, trace_id: str) -> JobMessage:
        return JobMessage.for_object(
            bucket=upload.bucket,
            key=upload.key,
            raw=raw,
            etag=upload.etag,
            version_id=upload.version_id,
            trace_id=trace_id,
            renditions=self.config.renditions,
            sequencer=upload.sequencer,
            uploaded_at=upload.event_time,
        )

    @staticmethod
    def _report(message: JobMessage, placed: JobRecord | Refusal, report: Report) -> None:
        verdict = placed.verdict.value if isinstance(placed, Refusal) else "created"
        fields = {"job_id": message.job_id, "key": message.key, "placement": verdict}
        emit(log, logging.INFO, f"enqueue.{verdict}", **fields)
        if isinstance(placed, JobRecord):
            return
        if placed.verdict is Verdict.DUPLICATE:
            report.duplicates.append(message.job_id)
        elif placed.verdict is Verdict.STALE:
            report.stale.append(message.job_id)
        elif placed.verdict is Verdict.HELD:
            report.held.append(message.job_id)

    def _deleted(self, upload: Upload, report: Report) -> None:
        """The owner deleted an upload: a job not yet published must never be."""
        try:
            raw = parse_raw_key(upload.key, self.config.allowed_extensions)
        except InvalidKeyError:
            return
        outcome = self._records.deleted(raw.user_id, raw.video_id, upload.key, upload.sequencer)
        self._announce(outcome)
        recorded = isinstance(outcome, JobRecord)
        if recorded:
            report.deleted.append(upload.key)
        reason = "recorded" if recorded else getattr(outcome, "reason", "")
        emit(log, logging.INFO, "enqueue.deleted", key=upload.key, recorded=recorded, note=reason)

    def _check(self, upload: Upload, report: Report) -> RawKey | None:
        """The parsed key of an acceptable upload; otherwise the rejection is recorded."""
        if upload.problem:
            self._reject(upload, None, Reason.INVALID_KEY, upload.problem, report)
            return None
        try:
            raw = parse_raw_key(upload.key, self.config.allowed_extensions)
        except InvalidKeyError as exc:
            ids = RawKey(exc.ids[0], exc.ids[1], "") if exc.ids else None
            self._reject(upload, ids, exc.reason, exc.detail, report)
            return None
        if upload.size <= 0:
            self._reject(upload, raw, Reason.INPUT_EMPTY, "the upload is empty", report)
            return None
        if upload.size > self.config.max_input_bytes:
            detail = f"{upload.size} bytes is over the {self.config.max_input_bytes}-byte limit"
            self._reject(upload, raw, Reason.INPUT_TOO_LARGE, detail, report)
            return None
        return raw

    def _reject(
        self, upload: Upload, raw: RawKey | None, reason: Reason, detail: str, report: Report
    ) -> None:
        # Without a valid user and video id there is no record to write: the log line is the record.
        recorded = raw is not None and self._record_rejection(upload, raw, reason, detail)
        report.rejected.append({"key": upload.key, "reason": reason.value, "detail": detail})
        emit(
            log,
            logging.WARNING,
            "enqueue.rejected",
            key=upload.key,
            bucket=upload.bucket,
            size=upload.size,
            reason=reason.value,
            detail=detail,
            recorded=recorded,
        )

    def _record_rejection(self, upload: Upload, raw: RawKey, reason: Reason, detail: str) -> bool:
        message = self._message(upload, raw, uuid.uuid4().hex)
        error = ErrorInfo(code=reason.value, message=detail, retryable=False)
        placed = self._records.place(message, upload.size, error)
        self._announce(placed)
        return isinstance(placed, JobRecord)

    def _send_batch(self, chunk: Sequence[JobMessage], report: Report) -> None:
        pending = {str(index): message for index, message in enumerate(chunk)}
        last_error = ""
        for attempt in range(SEND_ATTEMPTS):
            if attempt:
                emit(
                    log, logging.WARNING, "enqueue.batch_retry", ids=list(pending), error=last_error
                )
                time.sleep(SEND_RETRY_BASE_S * 2 ** (attempt - 1))
            try:
                last_error = self._send_once(pending, report)
            except (ClientError, BotoCoreError) as exc:
                last_error = str(exc)
            if not pending:
                return
        for message in pending.values():
            report.errors.append({"job_id": message.job_id, "error": last_error})
            emit(log, logging.ERROR, "enqueue.send_failed", job_id=message.job_id, error=last_error)

    def _send_once(self, pending: dict[str, JobMessage], report: Report) -> str:
        """One ``SendMessageBatch`` of the pending entries; returns the last failure, if any."""
        response = self._sqs.send_message_batch(
            QueueUrl=self.config.queue_url,
            Entries=[{"Id": i, "MessageBody": m.model_dump_json()} for i, m in pending.items()],
        )
        for ok in response.get("Successful", []):
            message = pending.pop(ok["Id"])
            report.queued.append(message.job_id)
            self._confirm(message, ok["MessageId"])
        failure = ""
        for bad in response.get("Failed", []):
            failure = f"{bad.get('Code')}: {bad.get('Message', '')}"
            if bad.get("SenderFault") and bad["Id"] in pending:  # retrying cannot help
                message = pending.pop(bad["Id"])
                report.errors.append({"job_id": message.job_id, "error": failure})
        return failure

    def _confirm(self, message: JobMessage, message_id: str) -> None:
        fields = {"job_id": message.job_id, "message_id": message_id, "key": message.key}
        emit(log, logging.INFO, "enqueue.sent", **fields)
        try:
            self._records.mark_enqueued(message, message_id)
        except (ClientError, BotoCoreError) as exc:
            # The message is out; only a retried event would send it again, which workers absorb.
            emit(log, logging.WARNING, "enqueue.confirm_failed", error=str(exc), **fields)


def build(
    config: EnqueueConfig, *, endpoint_url: str | None = None, region: str | None = None
) -> Enqueuer:
    """The enqueuer with its boto3 clients (``AWS_ENDPOINT_URL`` is honoured by boto3 itself)."""
    boto_config = Config(
        retries={"mode": "standard", "max_attempts": 5},
        region_name=region,
        connect_timeout=5,
        read_timeout=20,
    )
    return Enqueuer(
        config,
        boto3.client("dynamodb", endpoint_url=endpoint_url, config=boto_config),
        boto3.client("sqs", endpoint_url=endpoint_url, config=boto_config),
        bus.build(config.event_bus, endpoint_url=endpoint_url, region=region),
    )


_enqueuer: Enqueuer | None = None


def _cold_start() -> Enqueuer:
    global _enqueuer  # noqa: PLW0603 - one set of clients per Lambda container
    if _enqueuer is None:
        _enqueuer = build(EnqueueConfig.from_env(os.environ))
    return _enqueuer


def handler(event: Any, context: Any) -> dict[str, Any]:
    """Lambda entry point (S3 notification or EventBridge ``Object Created``)."""
    trace = getattr(context, "aws_request_id", None)
    return _cold_start().handle(event, trace_id=trace).as_dict()


if os.environ.get("AWS_LAMBDA_FUNCTION_NAME"):
    # Inside Lambda: validate the configuration and create the clients in the init phase, so a
    # misconfigured function fails at once with ConfigError's message, before any event.
    _cold_start()
