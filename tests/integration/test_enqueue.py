"""The enqueue Lambda's handler against the emulator over HTTP with boto3 clients, as in Lambda.

Events come from tests/support/events.py (the shapes the S3 user guide documents).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from records import as_dict, poke_arguments
from support.events import ETAG, eventbridge_event, s3_event, s3_record

from enqueue_lambda import handler as lambda_handler
from enqueue_lambda.handler import EnqueueConfig, EnqueueIncomplete, Enqueuer, Report
from transcoder.config import Settings
from transcoder.domain.job import derive_job_id
from transcoder.domain.record import record_key
from transcoder.ops.bootstrap import Resources

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_s3.type_defs import QueueConfigurationTypeDef
    from mypy_boto3_sqs import SQSClient


# ---------------------------------------------------------------- against the emulator

BUCKET = "media-bucket"
MAX_BYTES = 10_000_000


class Aws:
    """boto3 clients on the emulator plus the few reads the assertions need."""

    def __init__(self, settings: Settings, resources: Resources) -> None:
        config = Config(region_name=settings.region, retries={"max_attempts": 1})
        self.dynamodb: DynamoDBClient = boto3.client(
            "dynamodb", endpoint_url=settings.endpoint_url, config=config
        )
        self.sqs: SQSClient = boto3.client("sqs", endpoint_url=settings.endpoint_url, config=config)
        self.table = settings.table
        self.queue_url = resources.queue_url

    def record(self, user: str, video: str) -> dict[str, Any] | None:
        item = self.dynamodb.get_item(
            TableName=self.table, Key=record_key(user, video), ConsistentRead=True
        ).get("Item")
        return as_dict(item) if item else None

    def set(self, user: str, video: str, **values: Any) -> None:
        self.dynamodb.update_item(**poke_arguments(self.table, user, video, **values))

    def messages(self) -> list[dict[str, Any]]:
        """Every message in the jobs queue (received and held), parsed."""
        bodies: list[dict[str, Any]] = []
        for _ in range(20):
            got = self.sqs.receive_message(
                QueueUrl=self.queue_url, MaxNumberOfMessages=10, VisibilityTimeout=60
            ).get("Messages", [])
            if not got:
                break
            bodies += [json.loads(m["Body"]) for m in got]
        return bodies


@pytest.fixture
def aws(settings: Settings, resources: Resources) -> Aws:
    return Aws(settings, resources)


@pytest.fixture
def enqueuer(settings: Settings, aws: Aws) -> Enqueuer:
    config = EnqueueConfig(table=settings.table, queue_url=aws.queue_url, max_input_bytes=MAX_BYTES)
    return Enqueuer(config, aws.dynamodb, aws.sqs)


def count_calls(
    monkeypatch: pytest.MonkeyPatch, client: Any, name: str, fake: Callable[..., Any] | None = None
) -> list[dict[str, Any]]:
    """Record each call of a client method (its kwargs); ``fake`` may replace the real call."""
    calls: list[dict[str, Any]] = []
    real = getattr(client, name)

    def wrapper(**kwargs: Any) -> Any:
        calls.append(kwargs)
        return fake(real, len(calls), **kwargs) if fake else real(**kwargs)

    monkeypatch.setattr(client, name, wrapper)
    return calls


async def test_an_upload_becomes_one_queued_record_and_one_message(
    enqueuer: Enqueuer, aws: Aws
) -> None:
    report = enqueuer.handle(s3_event(s3_record("raw/u1/v1.mp4", bucket=BUCKET, size=500)))
    job_id = derive_job_id(
        BUCKET, "raw/u1/v1.mp4", version_id=None, etag=ETAG, sequencer="0C0F6F405D6ED209E1"
    )
    assert report.queued == [job_id]
    record = aws.record("u1", "v1")
    assert record is not None
    assert (record["status"], record["job_id"], record["enqueued"]) == ("QUEUED", job_id, True)
    assert record["source_size"] == 500
    (message,) = aws.messages()
    assert message == json.loads(record["message"])
    assert (message["job_id"], message["key"], message["source_etag"]) == (
        job_id,
        "raw/u1/v1.mp4",
        ETAG,
    )


async def test_the_same_event_twice_is_one_job_and_one_message(
    enqueuer: Enqueuer, aws: Aws
) -> None:
    event = s3_event(s3_record("raw/u1/v1.mp4", bucket=BUCKET))
    first = enqueuer.handle(event)
    second = enqueuer.handle(event)
    assert len(first.queued) == 1
    assert (second.queued, second.duplicates) == ([], first.queued)
    # The same object announced through EventBridge is the same job, too.
    bridged = eventbridge_event(
        "raw/u1/v1.mp4", bucket=BUCKET, version_id=None, size=100, seq="0C0F6F405D6ED209E1"
    )
    assert enqueuer.handle(bridged).duplicates == first.queued
    assert len(aws.messages()) == 1


async def test_ten_records_are_ten_jobs_in_one_batch_call(
    enqueuer: Enqueuer, aws: Aws, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = count_calls(monkeypatch, aws.sqs, "send_message_batch")
    records = [s3_record(f"raw/u1/v{i}.mp4", bucket=BUCKET) for i in range(10)]
    report = enqueuer.handle(s3_event(*records))
    assert len(calls) == 1
    assert len(calls[0]["Entries"]) == 10
    assert len(set(report.queued)) == 10
    assert sorted(m["video_id"] for m in aws.messages()) == sorted(f"v{i}" for i in range(10))
    assert all((aws.record("u1", f"v{i}") or {}).get("enqueued") for i in range(10))


async def test_eleven_records_take_two_batch_calls(
    enqueuer: Enqueuer, aws: Aws, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = count_calls(monkeypatch, aws.sqs, "send_message_batch")
    enqueuer.handle(s3_event(*[s3_record(f"raw/u2/v{i}.mp4", bucket=BUCKET) for i in range(11)]))
    assert [len(c["Entries"]) for c in calls] == [10, 1]


async def test_a_failed_batch_entry_is_retried_alone(
    enqueuer: Enqueuer, aws: Aws, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fail_entry_3_once(real: Callable[..., Any], call: int, **kwargs: Any) -> Any:
        if call > 1:
            return real(**kwargs)
        kept = [e for e in kwargs["Entries"] if e["Id"] != "3"]
        response = real(**{**kwargs, "Entries": kept})
        failed = {"Id": "3", "SenderFault": False, "Code": "InternalError", "Message": "injected"}
        return {**response, "Failed": [failed]}

    calls = count_calls(monkeypatch, aws.sqs, "send_message_batch", fail_entry_3_once)
    records = [s3_record(f"raw/u1/v{i}.mp4", bucket=BUCKET) for i in range(5)]
    report = enqueuer.handle(s3_event(*records))
    assert len(calls) == 2
    assert [e["Id"] for e in calls[1]["Entries"]] == ["3"]
    assert json.loads(calls[1]["Entries"][0]["MessageBody"])["video_id"] == "v3"
    assert len(report.queued) == 5
    assert len(aws.messages()) == 5
    assert (aws.record("u1", "v3") or {}).get("enqueued") is True


HOSTILE_KEYS = [
    "raw/../x.mp4",
    "raw/u/v/w.mp4",
    "raw/u/.mp4",
    "raw//v.mp4",
    "raw/u/v.mp4/",
    "raw/" + "a" * 129 + "/v.mp4",
    "raw/u/" + "v" * 129 + ".mp4",
    "raw/u%2F..%2F..%2Fx/v.mp4",
    "raw/u/..mp4",
    "raw/u/my+holiday.mp4",
    "raw/u/a%2Bb.mp4",
    "raw/u/vid%C3%A9o.mp4",
    "raw/u/v%00.mp4",
    "raw/-u/v.mp4",
    "raw/u/%FF.mp4",
]


async def test_hostile_keys_are_rejected_and_logged_never_raised(
    enqueuer: Enqueuer, aws: Aws, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="enqueue_lambda")
    records = [s3_record(key, bucket=BUCKET) for key in HOSTILE_KEYS]
    report = enqueuer.handle(s3_event(*records))
    assert [r["reason"] for r in report.rejected] == ["invalid_key"] * len(HOSTILE_KEYS)
    assert report.rejected[0]["key"] == "raw/../x.mp4"
    assert report.rejected[9]["key"] == "raw/u/my holiday.mp4"
    assert report.rejected[11]["key"] == "raw/u/vidéo.mp4"
    assert report.queued == []
    assert aws.messages() == []
    lines = [json.loads(r.getMessage()) for r in caplog.records]
    rejected = [line for line in lines if line["event"] == "enqueue.rejected"]
    assert len(rejected) == len(HOSTILE_KEYS)
    assert not any(line["recorded"] for line in rejected)  # no valid ids: nothing to record under
    assert aws.record("u", "v") is None


async def test_rejections_that_name_a_video_are_recorded_failed(
    enqueuer: Enqueuer, aws: Aws
) -> None:
    event = s3_event(
        s3_record("raw/u1/doc.exe", bucket=BUCKET),
        s3_record("raw/u1/empty.mp4", bucket=BUCKET, size=0),
        s3_record("raw/u1/huge.mkv", bucket=BUCKET, size=MAX_BYTES + 1),
        s3_record("raw/u1/noext", bucket=BUCKET),
    )
    report = enqueuer.handle(event)
    assert report.queued == []
    expected = {
        "doc": "unsupported_extension",
        "empty": "input_empty",
        "huge": "input_too_large",
        "noext": "unsupported_extension",
    }
    for video, code in expected.items():
        record = aws.record("u1", video)
        assert record is not None
        assert record["status"] == "FAILED"
        assert record["error"]["code"] == code
        assert record["error"]["retryable"] is False
    assert aws.messages() == []


async def test_upper_case_extensions_and_encoded_ids_are_accepted(
    enqueuer: Enqueuer, aws: Aws
) -> None:
    report = enqueuer.handle(s3_event(s3_record("raw/user%2D1/Clip_01.MOV", bucket=BUCKET)))
    assert len(report.queued) == 1
    record = aws.record("user-1", "Clip_01")
    assert record is not None and record["source_key"] == "raw/user-1/Clip_01.MOV"


async def test_keys_outside_raw_are_ignored(enqueuer: Enqueuer, aws: Aws) -> None:
    report = enqueuer.handle(
        s3_event(
            s3_record("uploads/u1/v1.mp4", bucket=BUCKET),
            s3_record("transcoded/720p/u1/v1.mp4", bucket=BUCKET),
        )
    )
    assert report.ignored == ["uploads/u1/v1.mp4", "transcoded/720p/u1/v1.mp4"]
    assert aws.record("u1", "v1") is None


async def test_a_new_upload_replaces_a_finished_job(enqueuer: Enqueuer, aws: Aws) -> None:
    old = enqueuer.handle(s3_event(s3_record("raw/u1/v1.mp4", bucket=BUCKET, seq="10")))
    aws.set("u1", "v1", status="COMPLETED", progress=100)
    new_etag = "c" * 32
    new = enqueuer.handle(
        s3_event(s3_record("raw/u1/v1.mp4", bucket=BUCKET, etag=new_etag, seq="20"))
    )
    assert new.queued and new.queued != old.queued
    record = aws.record("u1", "v1")
    assert record is not None
    assert (record["status"], record["job_id"], record["progress"]) == ("QUEUED", new.queued[0], 0)
    assert len(aws.messages()) == 2


async def test_a_new_upload_never_clobbers_a_live_lease(enqueuer: Enqueuer, aws: Aws) -> None:
    old = enqueuer.handle(s3_event(s3_record("raw/u1/v1.mp4", bucket=BUCKET, seq="10")))
    lease = {"status": "PROCESSING", "lease_owner": "w1", "lease_expires_at": time.time() + 300}
    aws.set("u1", "v1", **lease)
    new = enqueuer.handle(
        s3_event(s3_record("raw/u1/v1.mp4", bucket=BUCKET, etag="c" * 32, seq="20"))
    )
    assert new.held == new.queued and len(new.queued) == 1
    record = aws.record("u1", "v1")
    assert record is not None
    assert (record["job_id"], record["status"], record["lease_owner"]) == (
        old.queued[0],
        "PROCESSING",
        "w1",
    )
    # The new job's message is out: the worker backs off until the running attempt ends.
    assert {m["job_id"] for m in aws.messages()} == {old.queued[0], new.queued[0]}
    # A rejected re-upload cannot take the record from the running job either.
    enqueuer.handle(s3_event(s3_record("raw/u1/v1.mp4", bucket=BUCKET, size=0, seq="30")))
    assert (aws.record("u1", "v1") or {}).get("lease_owner") == "w1"


async def test_an_out_of_order_older_notification_changes_nothing(
    enqueuer: Enqueuer, aws: Aws
) -> None:
    newer = enqueuer.handle(
        s3_event(s3_record("raw/u1/v1.mp4", bucket=BUCKET, etag="c" * 32, seq="0020"))
    )
    older = enqueuer.handle(s3_event(s3_record("raw/u1/v1.mp4", bucket=BUCKET, seq="10")))
    assert older.stale and older.queued == []
    assert (aws.record("u1", "v1") or {}).get("job_id") == newer.queued[0]
    assert len(aws.messages()) == 1


async def test_a_job_whose_send_failed_is_sent_when_lambda_retries_the_event(
    enqueuer: Enqueuer, aws: Aws, monkeypatch: pytest.MonkeyPatch
) -> None:
    def throttled(real: Callable[..., Any], call: int, **kwargs: Any) -> Any:
        error = {"Error": {"Code": "ThrottlingException", "Message": "slow down"}}
        raise ClientError(error, "SendMessageBatch")  # type: ignore[arg-type]

    monkeypatch.setattr(lambda_handler, "SEND_RETRY_BASE_S", 0.01)
    count_calls(monkeypatch, aws.sqs, "send_message_batch", throttled)
    event = s3_event(s3_record("raw/u1/v1.mp4", bucket=BUCKET))
    with pytest.raises(EnqueueIncomplete):
        enqueuer.handle(event)
    assert (aws.record("u1", "v1") or {}).get("enqueued") is False
    monkeypatch.undo()
    retried = enqueuer.handle(event)  # Lambda's retry of the same event
    assert len(retried.queued) == 1
    assert (aws.record("u1", "v1") or {}).get("enqueued") is True
    assert len(aws.messages()) == 1


async def test_a_rejected_video_can_be_uploaded_again(enqueuer: Enqueuer, aws: Aws) -> None:
    enqueuer.handle(s3_event(s3_record("raw/u1/v1.mp4", bucket=BUCKET, size=0, seq="10")))
    assert (aws.record("u1", "v1") or {}).get("status") == "FAILED"
    report = enqueuer.handle(
        s3_event(s3_record("raw/u1/v1.mp4", bucket=BUCKET, etag="d" * 32, seq="20"))
    )
    record = aws.record("u1", "v1")
    assert record is not None
    assert (record["status"], record["job_id"]) == ("QUEUED", report.queued[0])
    assert "error" not in record


async def test_the_lambda_entry_point_builds_its_clients_once(
    settings: Settings, aws: Aws, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TRANSCODER_TABLE", settings.table)
    monkeypatch.setenv("TRANSCODER_QUEUE_URL", aws.queue_url)
    monkeypatch.setenv("AWS_ENDPOINT_URL", str(settings.endpoint_url))
    monkeypatch.setattr(lambda_handler, "_enqueuer", None)
    context = SimpleNamespace(aws_request_id="c6af9ac6-7b61-11e6-9a41-93e8deadbeef")
    first = lambda_handler.handler(s3_event(s3_record("raw/u1/v1.mp4", bucket=BUCKET)), context)
    built = lambda_handler._enqueuer
    second = lambda_handler.handler(eventbridge_event("raw/u1/v2.mp4", bucket=BUCKET), context)
    assert lambda_handler._enqueuer is built is not None
    assert len(first["queued"]) == 1 and len(second["queued"]) == 1
    assert (aws.record("u1", "v1") or {}).get("trace_id") == context.aws_request_id
    assert lambda_handler.handler({"Event": "s3:TestEvent"}, context)["ignored"] == ["s3:TestEvent"]


async def test_the_emulators_own_s3_notifications_are_handled(
    settings: Settings, enqueuer: Enqueuer, aws: Aws
) -> None:
    """S3 itself (moto) builds the events: bucket notifications to an SQS queue, fed to the handler
    as Lambda would get them. Includes the s3:TestEvent S3 sends when notifications are set up."""
    config = Config(region_name=settings.region, retries={"max_attempts": 1})
    s3 = boto3.client("s3", endpoint_url=settings.endpoint_url, config=config)
    inbox = aws.sqs.create_queue(QueueName=f"{settings.queue}-s3-events")["QueueUrl"]
    arn = aws.sqs.get_queue_attributes(QueueUrl=inbox, AttributeNames=["QueueArn"])
    to_inbox: QueueConfigurationTypeDef = {
        "QueueArn": arn["Attributes"]["QueueArn"],
        "Events": ["s3:ObjectCreated:*"],
        "Filter": {"Key": {"FilterRules": [{"Name": "prefix", "Value": "raw/"}]}},
    }
    s3.put_bucket_notification_configuration(
        Bucket=settings.bucket, NotificationConfiguration={"QueueConfigurations": [to_inbox]}
    )
    put = s3.put_object(Bucket=settings.bucket, Key="raw/u1/clip_1.MOV", Body=b"not empty")
    s3.put_object(Bucket=settings.bucket, Key="raw/u1/été 1+1.mp4", Body=b"x")
    reports: list[Report] = []
    for _ in range(5):
        received = aws.sqs.receive_message(
            QueueUrl=inbox, MaxNumberOfMessages=10, WaitTimeSeconds=1
        )
        reports += [enqueuer.handle(json.loads(m["Body"])) for m in received.get("Messages", [])]
        if sum(len(r.queued) + len(r.rejected) for r in reports) >= 2:
            break
    job_id = derive_job_id(settings.bucket, "raw/u1/clip_1.MOV", version_id=None, etag=put["ETag"])
    assert [j for r in reports for j in r.queued] == [job_id]
    assert [x["key"] for r in reports for x in r.rejected] == ["raw/u1/été 1+1.mp4"]
    assert ["s3:TestEvent"] in [r.ignored for r in reports]
