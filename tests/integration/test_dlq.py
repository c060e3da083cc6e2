"""The dead-letter handler on the emulator: SQS's own redrive to the DLQ, Lambda's event shape."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError
from fakes import job
from support.operator import Aws

from enqueue_lambda import dlq
from enqueue_lambda.dlq import DeadLetterHandler
from enqueue_lambda.handler import EnqueueConfig, Enqueuer, s3_event_for
from transcoder.config import Settings
from transcoder.domain import transitions as t
from transcoder.domain.job import ErrorInfo, PartsRecord, PartState, Reason
from transcoder.domain.record import JobRecord, to_item
from transcoder.ops.bootstrap import Resources

if TYPE_CHECKING:
    from mypy_boto3_sqs.type_defs import MessageAttributeValueTypeDef

BUCKET = "media-bucket"
PARTS = PartsRecord(
    rate="25/1",
    keyint=50,
    expected_frames=300,
    starts=(0, 150),
    audio=False,
    states=(PartState(), PartState()),
)
STALLED = ErrorInfo(code=Reason.STALLED, message="no new frame", retryable=True)


def uploads(*keys: str) -> dict[str, Any]:
    """The S3 event for fresh uploads of ``keys`` (the production builder the demo uses)."""
    records: list[dict[str, Any]] = []
    for key in keys:
        head = {"ContentLength": 1000, "ETag": f'"{uuid.uuid4().hex}"'}
        records += s3_event_for(BUCKET, key, head, "us-east-1")["Records"]
    return {"Records": records}


def fail_some_calls(
    monkeypatch: pytest.MonkeyPatch, client: Any, name: str, fake: Callable[..., Any]
) -> None:
    real = getattr(client, name)
    monkeypatch.setattr(client, name, lambda **kwargs: fake(real, **kwargs))


@pytest.fixture
def aws(settings: Settings, resources: Resources) -> Aws:
    return Aws(settings, resources)


@pytest.fixture
def enqueuer(settings: Settings, aws: Aws) -> Enqueuer:
    return Enqueuer(
        EnqueueConfig(table=settings.table, queue_url=aws.queue_url), aws.dynamodb, aws.sqs
    )


@pytest.fixture
def handler(settings: Settings, aws: Aws) -> DeadLetterHandler:
    return DeadLetterHandler(aws.dynamodb, settings.table)


def lambda_event(messages: list[dict[str, Any]], arn: str) -> dict[str, Any]:
    """SQS messages as Lambda's SQS event source delivers them (AWS Lambda developer guide)."""
    return {
        "Records": [
            {
                "messageId": m["MessageId"],
                "receiptHandle": m["ReceiptHandle"],
                "body": m["Body"],
                "attributes": {
                    "ApproximateReceiveCount": m["Attributes"]["ApproximateReceiveCount"],
                    "SentTimestamp": m["Attributes"]["SentTimestamp"],
                    "SenderId": m["Attributes"]["SenderId"],
                    "ApproximateFirstReceiveTimestamp": m["Attributes"][
                        "ApproximateFirstReceiveTimestamp"
                    ],
                },
                "messageAttributes": {
                    name: {
                        "stringValue": value["StringValue"],
                        "stringListValues": [],
                        "binaryListValues": [],
                        "dataType": value["DataType"],
                    }
                    for name, value in m.get("MessageAttributes", {}).items()
                },
                "md5OfBody": m["MD5OfBody"],
                "eventSource": "aws:sqs",
                "eventSourceARN": arn,
                "awsRegion": "us-east-1",
            }
            for m in messages
        ]
    }


def dead_letter_everything(aws: Aws, dlq_url: str) -> dict[str, Any]:
    """Receive every job message past maxReceiveCount (3) so SQS itself moves it to the DLQ;
    then read the DLQ (visibility 0: the messages stay there) as the DLQ Lambda's event."""
    for _ in range(4):
        aws.sqs.receive_message(QueueUrl=aws.queue_url, MaxNumberOfMessages=10, VisibilityTimeout=0)
    messages: dict[str, dict[str, Any]] = {}
    for _ in range(5):
        for m in aws.sqs.receive_message(
            QueueUrl=dlq_url,
            MaxNumberOfMessages=10,
            VisibilityTimeout=0,
            MessageSystemAttributeNames=["All"],
            MessageAttributeNames=["All"],
        ).get("Messages", []):
            messages[m["MessageId"]] = dict(m)
    arn = aws.sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])
    return lambda_event(list(messages.values()), arn["Attributes"]["QueueArn"])


def records_by_video(event: dict[str, Any]) -> dict[str, str]:
    return {json.loads(r["body"])["video_id"]: r["messageId"] for r in event["Records"]}


async def test_a_dead_lettered_job_is_failed_with_its_last_cause(
    enqueuer: Enqueuer, aws: Aws, handler: DeadLetterHandler, resources: Resources
) -> None:
    enqueuer.handle(uploads("raw/u1/v1.mp4"))
    cause = {"code": "stalled", "message": "no new frame for 120 s", "retryable": True}
    aws.set("u1", "v1", error=cause, attempts=3)
    event = dead_letter_everything(aws, resources.dlq_url)
    assert len(event["Records"]) == 1
    assert handler.handle(event) == {"batchItemFailures": []}
    record = aws.record("u1", "v1")
    assert record is not None
    assert record["status"] == "FAILED"
    assert record["error"]["code"] == "retries_exhausted"
    assert record["error"]["retryable"] is True
    assert "3 attempt(s)" in record["error"]["message"]
    assert "stalled: no new frame for 120 s" in record["error"]["message"]
    # Delivered again (Lambda retries are at-least-once): nothing changes.
    assert handler.handle(event) == {"batchItemFailures": []}
    assert aws.record("u1", "v1") == record


async def test_completed_running_and_superseded_jobs_are_left_alone(
    enqueuer: Enqueuer, aws: Aws, handler: DeadLetterHandler, resources: Resources
) -> None:
    videos = ("done", "running", "replaced", "permanent")
    enqueuer.handle(uploads(*[f"raw/u1/{v}.mp4" for v in videos]))
    aws.set("u1", "done", status="COMPLETED", progress=100)
    aws.set(
        "u1", "running", status="PROCESSING", lease_owner="w1", lease_expires_at=time.time() + 300
    )
    newer = "2999-01-01T00:00:00.000Z"
    aws.set(
        "u1",
        "replaced",
        job_id="f" * 32,
        submitted_at=newer,
        uploaded_at=newer,
        source_sequencer="F" * 64,
    )
    gone = {"code": "not_a_video", "message": "ffprobe: invalid data", "retryable": False}
    aws.set("u1", "permanent", status="FAILED", error=gone)
    before = {v: aws.record("u1", v) for v in videos}
    event = dead_letter_everything(aws, resources.dlq_url)
    assert len(event["Records"]) == 4
    assert handler.handle(event) == {"batchItemFailures": []}
    assert {v: aws.record("u1", v) for v in videos} == before


async def test_a_newer_upload_dead_lettered_behind_a_running_job_is_kept(
    enqueuer: Enqueuer, aws: Aws, handler: DeadLetterHandler, resources: Resources
) -> None:
    """The worker holds a newer upload's message back while an earlier job runs; if that burns
    its receives, the DLQ handler keeps it: waits while the earlier job runs, then records it."""
    first = enqueuer.handle(uploads("raw/u1/v1.mp4"))
    aws.set("u1", "v1", status="PROCESSING", lease_owner="w1", lease_expires_at=time.time() + 300)
    second = enqueuer.handle(uploads("raw/u1/v1.mp4"))
    assert second.held == second.queued
    event = dead_letter_everything(aws, resources.dlq_url)
    by_job = {json.loads(r["body"])["job_id"]: r for r in event["Records"]}
    assert set(by_job) == {first.queued[0], second.queued[0]}
    waiting = {"itemIdentifier": by_job[second.queued[0]]["messageId"]}
    assert handler.handle(event) == {"batchItemFailures": [waiting]}
    assert (aws.record("u1", "v1") or {})["lease_owner"] == "w1"
    aws.set("u1", "v1", status="COMPLETED", lease_expires_at=0)  # the earlier job finished
    assert handler.handle(event) == {"batchItemFailures": []}  # SQS's redelivery
    record = aws.record("u1", "v1")
    assert record is not None
    assert (record["job_id"], record["status"]) == (second.queued[0], "FAILED")
    assert (record["error"]["code"], record["error"]["retryable"]) == ("retries_exhausted", True)
    assert record["message"] == by_job[second.queued[0]]["body"]  # `transcoder retry` can run it


async def test_poison_messages_are_logged_and_recorded_when_they_name_a_video(
    aws: Aws, handler: DeadLetterHandler, resources: Resources, caplog: pytest.LogCaptureFixture
) -> None:
    detail = "not a job message: job_id: Field required"
    attributes: dict[str, MessageAttributeValueTypeDef] = {
        "transcoder_reason": {"DataType": "String", "StringValue": "invalid_message"},
        "transcoder_detail": {"DataType": "String", "StringValue": detail},
    }
    for body in (json.dumps({"user_id": "u1", "video_id": "p1", "v": 2}), "not json at all"):
        aws.sqs.send_message(
            QueueUrl=resources.dlq_url, MessageBody=body, MessageAttributes=attributes
        )
    event = dead_letter_everything(aws, resources.dlq_url)
    assert handler.handle(event) == {"batchItemFailures": []}
    record = aws.record("u1", "p1")
    assert record is not None
    assert (record["status"], record["error"]["code"]) == ("FAILED", "invalid_message")
    assert record["error"]["message"] == detail
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "enqueue_lambda.dlq"]
    poison = [line for line in lines if line["event"] == "dlq.poison"]
    assert {line["body"] for line in poison} == {b["body"] for b in event["Records"]}
    assert {line["reason"] for line in poison} == {"invalid_message"}


async def test_only_records_that_hit_transient_errors_are_reported(
    enqueuer: Enqueuer,
    aws: Aws,
    handler: DeadLetterHandler,
    resources: Resources,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    enqueuer.handle(uploads(*[f"raw/u1/{v}.mp4" for v in "abc"]))
    event = dead_letter_everything(aws, resources.dlq_url)
    ids = records_by_video(event)

    def flaky(real: Callable[..., Any], **kwargs: Any) -> Any:
        if kwargs["Item"]["sk"]["S"] == "VIDEO#a":
            error = {"Error": {"Code": "ProvisionedThroughputExceededException", "Message": "x"}}
            raise ClientError(error, "PutItem")  # type: ignore[arg-type]
        if kwargs["Item"]["sk"]["S"] == "VIDEO#b":
            raise EndpointConnectionError(endpoint_url="http://dynamodb")
        return real(**kwargs)

    fail_some_calls(monkeypatch, aws.dynamodb, "put_item", flaky)
    result = handler.handle(event)
    assert sorted(f["itemIdentifier"] for f in result["batchItemFailures"]) == sorted(
        [ids["a"], ids["b"]]
    )
    assert (aws.record("u1", "c") or {}).get("status") == "FAILED"
    monkeypatch.undo()
    assert handler.handle(event) == {"batchItemFailures": []}  # Lambda's retry of the failures
    assert all((aws.record("u1", v) or {}).get("status") == "FAILED" for v in ("a", "b"))


async def test_the_lambda_entry_point_reads_its_table_from_the_environment(
    settings: Settings,
    aws: Aws,
    enqueuer: Enqueuer,
    resources: Resources,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TRANSCODER_TABLE", settings.table)
    monkeypatch.setenv("AWS_ENDPOINT_URL", str(settings.endpoint_url))
    monkeypatch.setattr(dlq, "_handler", None)
    enqueuer.handle(uploads("raw/u1/v1.mp4"))
    event = dead_letter_everything(aws, resources.dlq_url)
    assert dlq.handler(event, SimpleNamespace()) == {"batchItemFailures": []}
    assert (aws.record("u1", "v1") or {}).get("status") == "FAILED"


async def test_a_dead_lettered_part_fails_its_chunked_job_naming_the_part(
    settings: Settings, aws: Aws, handler: DeadLetterHandler, resources: Resources
) -> None:
    """A chunk whose worker died on every receive (its record still PROCESSING, the part's lease
    lapsed): the handler fails the job ``retries_exhausted`` naming the chunk and its last cause;
    a part still running under its lease is left for later (a batch item failure)."""
    message = job("chunked", user="u1")
    clock = t.Clock(datetime.now(UTC) - timedelta(seconds=3600))
    record = t.upload_seen(None, message, clock, size_bytes=1)
    assert isinstance(record, t.Write)
    current = record.record
    steps: tuple[Callable[[JobRecord], t.Decision], ...] = (
        lambda r: t.claim(r, message, "splitter", 600, clock),
        lambda r: t.split(r, t.lease_of(r), PARTS, clock),
        lambda r: t.fanned_out(r, t.lease_of(r), clock),
        lambda r: t.claim(r, message.for_part(PARTS.part(0)), "w1", 60, clock),
        lambda r: t.hand_back(r, t.lease_of(r, 0), STALLED, clock),
        lambda r: t.claim(r, message.for_part(PARTS.part(0)), "w2", 60, clock),
        lambda r: t.claim(r, message.for_part(PARTS.part(1)), "w3", 7200, clock),
    )
    for step in steps:
        decided = step(current)
        assert isinstance(decided, t.Write), decided
        current = decided.record
    aws.dynamodb.put_item(TableName=settings.table, Item=to_item(current))
    for index in (0, 1):
        aws.sqs.send_message(
            QueueUrl=aws.queue_url,
            MessageBody=message.for_part(PARTS.part(index)).model_dump_json(),
        )
    event = dead_letter_everything(aws, resources.dlq_url)
    assert len(event["Records"]) == 2
    running = next(r for r in event["Records"] if json.loads(r["body"])["part"]["index"] == 1)
    alone = {"Records": [running]}
    assert handler.handle(alone) == {
        "batchItemFailures": [{"itemIdentifier": running["messageId"]}]
    }
    assert aws.record("u1", "chunked")["status"] == "PROCESSING"
    assert handler.handle(event) == {"batchItemFailures": []}
    stored = aws.record("u1", "chunked")
    assert stored["status"] == "FAILED"
    assert stored["error"]["code"] == "retries_exhausted" and stored["error"]["retryable"] is True
    assert stored["error"]["message"] == (
        "chunk 1 of 2 dead-lettered after 2 attempt(s); last cause: stalled: no new frame"
    )
    # Delivered again: nothing changes (the job failed already; the running part is dropped).
    assert handler.handle(event) == {"batchItemFailures": []}
    assert aws.record("u1", "chunked") == stored
