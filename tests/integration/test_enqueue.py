"""The enqueue Lambda: event shapes as AWS documents them, key decoding and configuration (pure),
then the handler against the emulator over HTTP with boto3 clients, as in Lambda.

Event fixtures follow the examples in the S3 user guide ("Event message structure" for S3 ->
Lambda, event version 2.1; "EventBridge event message structure" for ``Object Created``).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from enqueue_lambda import handler as lambda_handler
from enqueue_lambda.config import DEFAULT_EXTENSIONS, ConfigError, table_from_env
from enqueue_lambda.events import Upload, decode_key, s3_event_for, sequencer, uploads_from_event
from enqueue_lambda.handler import EnqueueConfig, EnqueueIncomplete, Enqueuer, Report
from enqueue_lambda.records import Placement, classify
from transcoder.config import Settings
from transcoder.domain.job import derive_job_id, from_item, record_key, to_attr
from transcoder.ops.bootstrap import Resources

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_s3.type_defs import QueueConfigurationTypeDef
    from mypy_boto3_sqs import SQSClient

ETAG = "b21b84d653bb07b05b1e6b33684dc11b"


def s3_record(
    key: str,
    *,
    bucket: str = "media-bucket",
    size: int = 1305107,
    etag: str = ETAG,
    version_id: str | None = None,
    seq: str = "0C0F6F405D6ED209E1",
    event_name: str = "ObjectCreated:Put",
) -> dict[str, Any]:
    """One record exactly as S3 sends it to Lambda; ``key`` is given already URL-encoded."""
    obj: dict[str, Any] = {"key": key, "size": size, "eTag": etag, "sequencer": seq}
    if version_id is not None:
        obj["versionId"] = version_id
    return {
        "eventVersion": "2.1",
        "eventSource": "aws:s3",
        "awsRegion": "us-east-1",
        "eventTime": "2019-09-03T19:37:27.192Z",
        "eventName": event_name,
        "userIdentity": {"principalId": "AWS:AIDAINPONIXQXHT3IKHL2"},
        "requestParameters": {"sourceIPAddress": "205.255.255.255"},
        "responseElements": {
            "x-amz-request-id": "D82B88E5F771F645",
            "x-amz-id-2": "vlR7PnpV2Ce81l0PRw6jlUpck7Jo5ZsQjryTjKlc5aLWGVHPZLj5NeC6qMa0emYBDXOo6QB"
            "U0Wo=",
        },
        "s3": {
            "s3SchemaVersion": "1.0",
            "configurationId": "828aa6fc-f7b5-4305-8584-487c791949c1",
            "bucket": {
                "name": bucket,
                "ownerIdentity": {"principalId": "A3I5XTEXAMAI3E"},
                "arn": f"arn:aws:s3:::{bucket}",
            },
            "object": obj,
        },
    }


def s3_event(*records: dict[str, Any]) -> dict[str, Any]:
    return {"Records": list(records)}


def eventbridge_event(
    key: str,
    *,
    bucket: str = "media-bucket",
    size: int = 5,
    etag: str = ETAG,
    version_id: str | None = "IYV3p45BT0ac8hjHg1houSdS1a.Mro8e",
    seq: str = "00617F08299329D189",
    detail_type: str = "Object Created",
) -> dict[str, Any]:
    """An S3 event as EventBridge delivers it to Lambda; ``key`` given URL-encoded."""
    obj: dict[str, Any] = {"key": key, "size": size, "etag": etag, "sequencer": seq}
    if version_id is not None:
        obj["version-id"] = version_id
    return {
        "version": "0",
        "id": "17793124-05d4-b198-2fde-7ededc63b103",
        "detail-type": detail_type,
        "source": "aws.s3",
        "account": "111122223333",
        "time": "2021-11-12T00:00:00Z",
        "region": "ca-central-1",
        "resources": [f"arn:aws:s3:::{bucket}"],
        "detail": {
            "version": "0",
            "bucket": {"name": bucket},
            "object": obj,
            "request-id": "N4N7GDK58NMKJ12R",
            "requester": "123456789012",
            "source-ip-address": "1.2.3.4",
            "reason": "PutObject",
        },
    }


TEST_EVENT = {
    "Service": "Amazon S3",
    "Event": "s3:TestEvent",
    "Time": "2014-10-13T15:57:02.089Z",
    "Bucket": "media-bucket",
    "RequestId": "5582815E1AEA5ADF",
    "HostId": "8cLeGAmw098X5cv4Zkwcmo8vvZa3eH3eKxsPzbB9wrR+YstdA6Knx4Ip8EXAMPLE",
}


@pytest.mark.parametrize(
    ("encoded", "decoded"),
    [
        ("raw/u1/my+holiday.mp4", "raw/u1/my holiday.mp4"),
        ("raw/u1/a%2Bb.mp4", "raw/u1/a+b.mp4"),
        ("raw/u1/vid%C3%A9o+%C3%A9t%C3%A9.mov", "raw/u1/vidéo été.mov"),
        ("raw/user%2D1/clip%5F01.MP4", "raw/user-1/clip_01.MP4"),
        ("raw/%E6%97%A5%E6%9C%AC/v.mp4", "raw/日本/v.mp4"),
        ("raw/u1/100%25.mp4", "raw/u1/100%.mp4"),
    ],
)
def test_keys_are_decoded_as_s3_encodes_them(encoded: str, decoded: str) -> None:
    (upload,), ignored = uploads_from_event(s3_event(s3_record(encoded)))
    assert (upload.key, upload.problem, ignored) == (decoded, None, [])
    (bridged,), _ = uploads_from_event(eventbridge_event(encoded))
    assert bridged.key == decoded


def test_a_key_that_is_not_utf8_is_flagged_not_raised() -> None:
    key, problem = decode_key("raw/u1/%FF%FE.mp4")
    assert key == "raw/u1/%FF%FE.mp4"
    assert problem is not None and "UTF-8" in problem


def test_s3_record_fields_are_normalised() -> None:
    record = s3_record("raw/u1/v1.mp4", etag=f'"{ETAG}"', version_id="3HL4kqtJlcpXroDTDmJ")
    (upload,), _ = uploads_from_event(s3_event(record))
    assert upload == Upload(
        bucket="media-bucket",
        key="raw/u1/v1.mp4",
        size=1305107,
        etag=ETAG,
        version_id="3HL4kqtJlcpXroDTDmJ",
        sequencer="0C0F6F405D6ED209E1".rjust(64, "0"),
    )


def test_eventbridge_object_created_is_an_upload() -> None:
    (upload,), ignored = uploads_from_event(eventbridge_event("raw/u1/v1.mp4"))
    assert ignored == []
    assert (upload.bucket, upload.size, upload.etag) == ("media-bucket", 5, ETAG)
    assert upload.version_id == "IYV3p45BT0ac8hjHg1houSdS1a.Mro8e"


@pytest.mark.parametrize(
    "event",
    [
        TEST_EVENT,
        s3_event(s3_record("raw/u1/v1.mp4", event_name="ObjectRemoved:Delete")),
        eventbridge_event("raw/u1/v1.mp4", detail_type="Object Deleted"),
        {"Records": [{"eventSource": "aws:sqs", "body": "{}"}]},
        {"hello": "world"},
        s3_event({"eventSource": "aws:s3", "eventName": "ObjectCreated:Put", "s3": {}}),
    ],
    ids=["test-event", "removed", "eb-deleted", "sqs", "unknown", "malformed"],
)
def test_other_events_are_ignored_with_a_note(event: dict[str, Any]) -> None:
    uploads, ignored = uploads_from_event(event)
    assert uploads == []
    assert len(ignored) == 1


def test_multi_record_events_keep_every_record() -> None:
    records = [s3_record(f"raw/u1/v{i}.mp4") for i in range(10)]
    records.insert(3, s3_record("raw/u1/gone.mp4", event_name="ObjectRemoved:Delete"))
    uploads, ignored = uploads_from_event(s3_event(*records))
    assert [u.key for u in uploads] == [f"raw/u1/v{i}.mp4" for i in range(10)]
    assert len(ignored) == 1


def test_suspended_versioning_null_version_falls_back_to_the_etag() -> None:
    (upload,), _ = uploads_from_event(s3_event(s3_record("raw/u/v.mp4", version_id="null")))
    assert (upload.version_id, upload.etag) == (None, ETAG)


def test_local_event_round_trips_through_the_parser() -> None:
    head = {"ContentLength": 42, "ETag": f'"{ETAG}"'}
    event = s3_event_for("media-bucket", "raw/u1/my clip+1.mp4", head, "eu-west-1")
    assert event["Records"][0]["s3"]["object"]["key"] == "raw/u1/my+clip%2B1.mp4"
    (upload,), _ = uploads_from_event(event)
    assert (upload.key, upload.size, upload.etag) == ("raw/u1/my clip+1.mp4", 42, ETAG)


def test_sequencers_compare_as_padded_hex() -> None:
    short, long = sequencer("FF"), sequencer("0100")
    assert short is not None and long is not None and short < long
    assert sequencer("not hex") is None
    assert sequencer(None) is None


def test_classify_explains_a_failed_put() -> None:
    seq = sequencer("10")
    newer = {"job_id": "b" * 32, "source_sequencer": sequencer("20"), "status": "QUEUED"}
    running = {"job_id": "b" * 32, "status": "PROCESSING", "lease_expires_at": 2_000}
    assert classify({"job_id": "a" * 32, "enqueued": True}, "a" * 32, seq, 1_000) == (
        Placement.DUPLICATE
    )
    assert classify({"job_id": "a" * 32, "enqueued": False}, "a" * 32, seq, 1_000) == (
        Placement.RESEND
    )
    assert classify(newer, "a" * 32, seq, 1_000) == Placement.STALE
    assert classify(running, "a" * 32, seq, 1_000) == Placement.HELD
    assert classify(running, "a" * 32, seq, 3_000) is None  # the lease lapsed: put again
    assert classify(None, "a" * 32, seq, 1_000) is None


def test_config_from_env_defaults_and_overrides() -> None:
    base = {"TRANSCODER_TABLE": "jobs", "TRANSCODER_QUEUE_URL": "https://sqs.example/q"}
    assert EnqueueConfig.from_env(base).allowed_extensions == DEFAULT_EXTENSIONS
    config = EnqueueConfig.from_env(
        {
            **base,
            "TRANSCODER_ALLOWED_EXTENSIONS": "MP4, .mov",
            "TRANSCODER_MAX_INPUT_BYTES": "1000",
            "TRANSCODER_RENDITIONS": "720p",
        }
    )
    assert config.allowed_extensions == frozenset({"mp4", "mov"})
    assert (config.max_input_bytes, config.renditions) == (1000, ("720p",))


def test_config_errors_name_every_variable() -> None:
    with pytest.raises(ConfigError) as caught:
        EnqueueConfig.from_env(
            {
                "TRANSCODER_QUEUE_URL": "jobs",
                "TRANSCODER_MAX_INPUT_BYTES": "-1",
                "TRANSCODER_ALLOWED_EXTENSIONS": "mp4,../x",
                "TRANSCODER_RENDITIONS": "720",
            }
        )
    message = str(caught.value)
    for name in (
        "TRANSCODER_TABLE",
        "TRANSCODER_QUEUE_URL",
        "TRANSCODER_MAX_INPUT_BYTES",
        "TRANSCODER_ALLOWED_EXTENSIONS",
        "TRANSCODER_RENDITIONS",
    ):
        assert name in message
    with pytest.raises(ConfigError, match="TRANSCODER_TABLE"):
        table_from_env({})


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
        return from_item(item) if item else None

    def set(self, user: str, video: str, **values: Any) -> None:
        names = {f"#{k}": k for k in values}
        self.dynamodb.update_item(
            TableName=self.table,
            Key=record_key(user, video),
            UpdateExpression="SET " + ", ".join(f"#{k} = :{k}" for k in values),
            ExpressionAttributeNames=names,
            ExpressionAttributeValues={f":{k}": to_attr(v) for k, v in values.items()},
        )

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
    job_id = derive_job_id(BUCKET, "raw/u1/v1.mp4", version_id=None, etag=ETAG)
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
    bridged = eventbridge_event("raw/u1/v1.mp4", bucket=BUCKET, version_id=None, size=100)
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


def test_a_misconfigured_lambda_fails_its_init_phase_with_a_clear_error() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRANSCODER_")}
    env.update(AWS_LAMBDA_FUNCTION_NAME="enqueue", TRANSCODER_QUEUE_URL="jobs")
    result = subprocess.run(
        [sys.executable, "-c", "import enqueue_lambda.handler"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    assert "ConfigError" in result.stderr
    assert "TRANSCODER_TABLE" in result.stderr and "TRANSCODER_QUEUE_URL" in result.stderr


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


def test_report_lists_every_outcome() -> None:
    assert set(Report().as_dict()) == {
        "queued",
        "duplicates",
        "held",
        "stale",
        "rejected",
        "ignored",
        "errors",
    }
