"""The enqueue Lambda: an S3 ``ObjectCreated`` event under ``raw/`` becomes a job and a message.

Imports only ``transcoder.job`` and boto3 so the Lambda bundle stays small.

For each record of the event:

1. Decode the key exactly as S3 encodes it in events (``+`` is a space, percent escapes, UTF-8)
   and parse ``raw/{userId}/{videoId}.{ext}`` strictly.
2. Reject empty or over-large objects and bad keys: the rejection is written to DynamoDB as a
   terminal ``FAILED`` record with a reason code (when the key names a user and a video) and
   logged. Nothing is raised, so Lambda never retries a bad upload forever.
3. Create the ``QUEUED`` record with a conditional put: the same upload twice (same ETag/version,
   hence the same ``job_id``) is a no-op; a new upload of the same video replaces a finished or
   queued record but never a running job's live lease.
4. Send the messages with ``SendMessageBatch`` and retry only the failed entries; then mark each
   record ``enqueued``. A record that exists but was never marked enqueued (a crash between put and
   send) is sent again by the retried event, so a job is never lost.

Configuration comes from environment variables, validated at cold start (``EnqueueConfig``).
"""

from __future__ import annotations

import json
import logging
import os
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote_plus

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

from transcoder.job import (
    DEFAULT_RENDITIONS,
    RAW_PREFIX,
    InvalidKeyError,
    JobMessage,
    RawKey,
    Reason,
    Status,
    isoformat,
    parse_raw_key,
    record_key,
    to_attr,
    utcnow,
)

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_sqs import SQSClient

log = logging.getLogger("enqueue_lambda")
log.setLevel(logging.INFO)

DEFAULT_EXTENSIONS = frozenset(
    [
        "mp4",
        "m4v",
        "mov",
        "mkv",
        "webm",
        "avi",
        "mpg",
        "mpeg",
        "ts",
        "mts",
        "m2ts",
        "3gp",
        "flv",
        "wmv",
        "ogv",
    ]
)
SEND_ATTEMPTS = 4
DEFAULT_MAX_INPUT_BYTES = 20 * 1024**3


class ConfigError(RuntimeError):
    """The Lambda's environment is incomplete or invalid."""


@dataclass(frozen=True)
class EnqueueConfig:
    table: str
    queue_url: str
    max_input_bytes: int = DEFAULT_MAX_INPUT_BYTES
    allowed_extensions: frozenset[str] = DEFAULT_EXTENSIONS
    renditions: tuple[str, ...] = DEFAULT_RENDITIONS

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> EnqueueConfig:
        problems = [
            name for name in ("TRANSCODER_TABLE", "TRANSCODER_QUEUE_URL") if not env.get(name)
        ]
        if problems:
            raise ConfigError(f"enqueue Lambda misconfigured: set {', '.join(problems)}")
        try:
            max_bytes = int(env.get("TRANSCODER_MAX_INPUT_BYTES", str(DEFAULT_MAX_INPUT_BYTES)))
        except ValueError:
            raise ConfigError("TRANSCODER_MAX_INPUT_BYTES must be an integer") from None
        if max_bytes <= 0:
            raise ConfigError("TRANSCODER_MAX_INPUT_BYTES must be positive")
        extensions = env.get("TRANSCODER_ALLOWED_EXTENSIONS")
        renditions = env.get("TRANSCODER_RENDITIONS")
        return cls(
            table=env["TRANSCODER_TABLE"],
            queue_url=env["TRANSCODER_QUEUE_URL"],
            max_input_bytes=max_bytes,
            allowed_extensions=(
                frozenset(e.strip().lower().lstrip(".") for e in extensions.split(",") if e.strip())
                if extensions
                else DEFAULT_EXTENSIONS
            ),
            renditions=(
                tuple(r.strip() for r in renditions.split(",") if r.strip())
                if renditions
                else DEFAULT_RENDITIONS
            ),
        )


@dataclass(frozen=True, slots=True)
class Upload:
    """One object-created notification, normalised from S3 or EventBridge."""

    bucket: str
    key: str
    size: int
    etag: str | None
    version_id: str | None


@dataclass
class Report:
    """What one invocation did; returned by the handler and logged."""

    queued: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    rejected: list[dict[str, str]] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "queued": self.queued,
            "duplicates": self.duplicates,
            "rejected": self.rejected,
            "ignored": self.ignored,
        }


def uploads_from_event(event: Mapping[str, Any]) -> tuple[list[Upload], list[str]]:
    """S3 notification (``Records``) or EventBridge ``Object Created`` -> uploads, ignored notes."""
    ignored: list[str] = []
    uploads: list[Upload] = []
    if event.get("Event") == "s3:TestEvent":
        return [], ["s3:TestEvent"]
    if event.get("source") == "aws.s3" and "detail" in event:
        detail = event["detail"]
        obj = detail.get("object", {})
        uploads.append(
            Upload(
                bucket=detail.get("bucket", {}).get("name", ""),
                key=str(obj.get("key", "")),  # EventBridge keys are not URL-encoded
                size=int(obj.get("size", 0)),
                etag=obj.get("etag"),
                version_id=obj.get("version-id"),
            )
        )
        return uploads, ignored
    for record in event.get("Records", []):
        if not str(record.get("eventName", "")).startswith("ObjectCreated"):
            ignored.append(f"event {record.get('eventName')}")
            continue
        s3 = record.get("s3", {})
        obj = s3.get("object", {})
        uploads.append(
            Upload(
                bucket=s3.get("bucket", {}).get("name", ""),
                key=unquote_plus(str(obj.get("key", "")), encoding="utf-8", errors="strict"),
                size=int(obj.get("size", 0)),
                etag=obj.get("eTag"),
                version_id=obj.get("versionId"),
            )
        )
    return uploads, ignored


def s3_event_for(bucket: str, key: str, head: Mapping[str, Any], region: str) -> dict[str, Any]:
    """The event S3 would deliver to Lambda for an object, built from its HeadObject response.

    Local runs (``transcoder submit``, ``transcoder demo``) invoke the handler with this so they
    exercise the production path.
    """
    from urllib.parse import quote_plus

    obj: dict[str, Any] = {
        "key": quote_plus(key, safe="/"),
        "size": int(head.get("ContentLength", 0)),
        "eTag": str(head.get("ETag", "")).strip('"'),
        "sequencer": f"{time.time_ns():016X}",
    }
    if head.get("VersionId"):
        obj["versionId"] = head["VersionId"]
    return {
        "Records": [
            {
                "eventVersion": "2.1",
                "eventSource": "aws:s3",
                "awsRegion": region,
                "eventTime": isoformat(utcnow()),
                "eventName": "ObjectCreated:Put",
                "userIdentity": {"principalId": "local"},
                "requestParameters": {"sourceIPAddress": "127.0.0.1"},
                "responseElements": {"x-amz-request-id": uuid.uuid4().hex[:16].upper()},
                "s3": {
                    "s3SchemaVersion": "1.0",
                    "configurationId": "raw-uploads",
                    "bucket": {"name": bucket, "arn": f"arn:aws:s3:::{bucket}"},
                    "object": obj,
                },
            }
        ]
    }


class Enqueuer:
    """Turns uploads into jobs. Clients are created once per Lambda container."""

    def __init__(self, config: EnqueueConfig, dynamodb: DynamoDBClient, sqs: SQSClient) -> None:
        self.config = config
        self._dynamodb = dynamodb
        self._sqs = sqs

    def handle(self, event: Mapping[str, Any], trace_id: str | None = None) -> Report:
        uploads, ignored = uploads_from_event(event)
        report = Report(ignored=ignored)
        pending: list[JobMessage] = []
        for upload in uploads:
            message = self._admit(upload, report, trace_id or uuid.uuid4().hex)
            if message is not None:
                pending.append(message)
        self._send(pending)
        report.queued.extend(m.job_id for m in pending)
        log.info(json.dumps({"event": "enqueue.done", **report.as_dict()}))
        return report

    def _admit(self, upload: Upload, report: Report, trace_id: str) -> JobMessage | None:
        if not upload.key.startswith(RAW_PREFIX):
            report.ignored.append(upload.key)
            return None
        try:
            raw = parse_raw_key(upload.key, self.config.allowed_extensions)
        except InvalidKeyError as exc:
            ids = RawKey(exc.ids[0], exc.ids[1], "") if exc.ids else None
            self._reject(upload, exc.reason, exc.detail, report, raw=ids)
            return None
        if upload.size <= 0:
            self._reject(upload, Reason.INPUT_EMPTY, "the upload is empty", report, raw=raw)
            return None
        if upload.size > self.config.max_input_bytes:
            detail = f"{upload.size} bytes is over the {self.config.max_input_bytes}-byte limit"
            self._reject(upload, Reason.INPUT_TOO_LARGE, detail, report, raw=raw)
            return None
        message = JobMessage.for_object(
            bucket=upload.bucket,
            key=upload.key,
            raw=raw,
            etag=upload.etag,
            version_id=upload.version_id,
            trace_id=trace_id,
            renditions=self.config.renditions,
        )
        if not self._put_queued(message, upload):
            report.duplicates.append(message.job_id)
            return None
        return message

    def _put_queued(self, message: JobMessage, upload: Upload) -> bool:
        """Create the QUEUED record; False when this exact job is already recorded and sent."""
        now = utcnow()
        item = {
            **record_key(message.user_id, message.video_id),
            **{
                name: to_attr(value)
                for name, value in {
                    "status": Status.QUEUED.value,
                    "job_id": message.job_id,
                    "user_id": message.user_id,
                    "video_id": message.video_id,
                    "source_bucket": message.bucket,
                    "source_key": message.key,
                    "source_size": upload.size,
                    "trace_id": message.trace_id,
                    "submitted_at": message.submitted_at,
                    "created_at": now,
                    "updated_at": now,
                    "attempts": 0,
                    "progress": 0,
                    "renditions": {},
                    "enqueued": False,
                    "message": message.model_dump_json(),
                }.items()
            },
        }
        try:
            self._dynamodb.put_item(
                TableName=self.config.table,
                Item=item,
                # A new job may replace the record unless it is the same job, or a running job
                # still holds a live lease (its worker would lose its fence mid-encode).
                ConditionExpression=(
                    "attribute_not_exists(pk) OR (job_id <> :job AND NOT "
                    "(#status = :processing AND lease_expires_at > :now))"
                ),
                ExpressionAttributeNames={"#status": "status"},
                ExpressionAttributeValues={
                    ":job": to_attr(message.job_id),
                    ":processing": to_attr(Status.PROCESSING.value),
                    ":now": to_attr(time.time()),
                },
            )
            return True
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "ConditionalCheckFailedException":
                raise
        current = self._dynamodb.get_item(
            TableName=self.config.table,
            Key=record_key(message.user_id, message.video_id),
            ConsistentRead=True,
        ).get("Item", {})
        same_job = current.get("job_id", {}).get("S") == message.job_id
        already_sent = current.get("enqueued", {}).get("BOOL", True)
        # Same job but never sent (a crash between put and send), or a newer upload while an older
        # job runs: send it; the worker backs off until the running attempt ends, then takes over.
        return not (same_job and already_sent)

    def _send(self, messages: Sequence[JobMessage]) -> None:
        for start in range(0, len(messages), 10):
            batch = {str(i): m for i, m in enumerate(messages[start : start + 10])}
            for attempt in range(SEND_ATTEMPTS):
                response = self._sqs.send_message_batch(
                    QueueUrl=self.config.queue_url,
                    Entries=[
                        {"Id": entry_id, "MessageBody": m.model_dump_json()}
                        for entry_id, m in batch.items()
                    ],
                )
                for ok in response.get("Successful", []):
                    self._mark_enqueued(batch.pop(ok["Id"]), ok["MessageId"])
                if not batch:
                    break
                log.warning(json.dumps({"event": "enqueue.batch_retry", "failed": list(batch)}))
                time.sleep(0.2 * 2**attempt)
            if batch:
                raise RuntimeError(f"could not send {len(batch)} job messages after retries")

    def _mark_enqueued(self, message: JobMessage, message_id: str) -> None:
        try:
            self._dynamodb.update_item(
                TableName=self.config.table,
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
            if exc.response["Error"]["Code"] != "ConditionalCheckFailedException":
                raise

    def _reject(
        self, upload: Upload, reason: Reason, detail: str, report: Report, raw: RawKey | None
    ) -> None:
        report.rejected.append({"key": upload.key, "reason": reason.value, "detail": detail})
        log.warning(
            json.dumps(
                {
                    "event": "enqueue.rejected",
                    "key": upload.key,
                    "reason": reason.value,
                    "detail": detail,
                }
            )
        )
        if raw is None:
            return  # no user/video to record it under; the log line is the record
        now = utcnow()
        values = {
            "status": Status.FAILED.value,
            "user_id": raw.user_id,
            "video_id": raw.video_id,
            "source_bucket": upload.bucket,
            "source_key": upload.key,
            "source_size": upload.size,
            "attempts": 0,
            "created_at": now,
            "updated_at": now,
            "failed_at": now,
            "error": {"code": reason.value, "message": detail, "retryable": False},
        }
        try:
            self._dynamodb.put_item(
                TableName=self.config.table,
                Item={
                    **record_key(raw.user_id, raw.video_id),
                    **{k: to_attr(v) for k, v in values.items()},
                },
                ConditionExpression="attribute_not_exists(pk) OR NOT "
                "(#status = :processing AND lease_expires_at > :now)",
                ExpressionAttributeNames={"#status": "status"},
                ExpressionAttributeValues={
                    ":processing": to_attr(Status.PROCESSING.value),
                    ":now": to_attr(time.time()),
                },
            )
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "ConditionalCheckFailedException":
                raise


def build(
    config: EnqueueConfig, *, endpoint_url: str | None = None, region: str | None = None
) -> Enqueuer:
    boto_config = Config(retries={"mode": "standard", "max_attempts": 5}, region_name=region)
    return Enqueuer(
        config,
        boto3.client("dynamodb", endpoint_url=endpoint_url, config=boto_config),
        boto3.client("sqs", endpoint_url=endpoint_url, config=boto_config),
    )


_enqueuer: Enqueuer | None = None


def _cold_start() -> Enqueuer:
    global _enqueuer  # noqa: PLW0603 - one set of clients per Lambda container
    if _enqueuer is None:
        _enqueuer = build(EnqueueConfig.from_env(os.environ))
    return _enqueuer


def handler(event: Mapping[str, Any], context: Any) -> dict[str, Any]:
    """Lambda entry point (S3 notification or EventBridge)."""
    trace = getattr(context, "aws_request_id", None)
    return _cold_start().handle(event, trace_id=trace).as_dict()
