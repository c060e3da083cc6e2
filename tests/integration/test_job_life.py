"""A job's life across writers, against the emulator: the behaviours the transition rules promise.

Each test drives the real enqueue handler, DLQ handler, worker store or operator command over
HTTP, the way production runs them; none of them needs ffmpeg.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from botocore.config import Config
from support.operator import run

from enqueue_lambda.dlq import DeadLetterHandler
from enqueue_lambda.handler import EnqueueConfig, Enqueuer, s3_event_for
from transcoder.aws.clients import Clients
from transcoder.aws.status import JobStore
from transcoder.config import Settings
from transcoder.domain.job import ErrorInfo, JobMessage, Published, Reason, Status
from transcoder.domain.record import JobRecord
from transcoder.domain.transitions import Lease
from transcoder.ops.bootstrap import Resources
from transcoder.runtime import app


@pytest.fixture
def boto(settings: Settings) -> dict[str, Any]:
    config = Config(region_name=settings.region, retries={"max_attempts": 1})
    return {
        name: boto3.client(name, endpoint_url=settings.endpoint_url, config=config)
        for name in ("s3", "sqs", "dynamodb")
    }


@pytest.fixture
def enqueuer(settings: Settings, resources: Resources, boto: dict[str, Any]) -> Enqueuer:
    config = EnqueueConfig(
        table=settings.table, queue_url=resources.queue_url, bucket=settings.bucket
    )
    return Enqueuer(config, boto["dynamodb"], boto["sqs"])


def put(
    boto: dict[str, Any], settings: Settings, key: str, body: bytes = b"video"
) -> dict[str, Any]:
    boto["s3"].put_object(Bucket=settings.bucket, Key=key, Body=body)
    return dict(boto["s3"].head_object(Bucket=settings.bucket, Key=key))


def event(settings: Settings, key: str, head: dict[str, Any], at: datetime) -> dict[str, Any]:
    """The notification S3 sends for ``key``, stamped with the time S3 finished the upload."""
    built = s3_event_for(settings.bucket, key, head, settings.region)
    built["Records"][0]["eventTime"] = at.isoformat().replace("+00:00", "Z")
    return built


async def record(clients: Clients, settings: Settings, video: str = "v") -> JobRecord:
    found = await JobStore(clients.dynamodb, settings.table).get("u", video)
    assert found is not None
    return found


def messages(boto: dict[str, Any], resources: Resources) -> list[dict[str, Any]]:
    got = (
        boto["sqs"]
        .receive_message(QueueUrl=resources.queue_url, MaxNumberOfMessages=10, VisibilityTimeout=0)
        .get("Messages", [])
    )
    return [json.loads(m["Body"]) for m in got]


async def test_a_later_upload_under_another_key_owns_the_record(
    settings: Settings, clients: Clients, enqueuer: Enqueuer, boto: dict[str, Any]
) -> None:
    now = datetime.now(UTC)
    mp4_head, mov_head = put(boto, settings, "raw/u/v.mp4"), put(boto, settings, "raw/u/v.mov")
    mp4_event = event(settings, "raw/u/v.mp4", mp4_head, now)
    mov_event = event(settings, "raw/u/v.mov", mov_head, now + timedelta(seconds=5))
    # Sequencers of different keys say nothing about their order: make the older one's larger.
    mp4_event["Records"][0]["s3"]["object"]["sequencer"] = "F" * 20
    mov_event["Records"][0]["s3"]["object"]["sequencer"] = "1"
    enqueuer.handle(mp4_event)
    later = enqueuer.handle(mov_event)
    assert (await record(clients, settings)).source_key == "raw/u/v.mov"
    assert enqueuer.handle(mp4_event).stale  # the older upload's late notification
    current = await record(clients, settings)
    assert (current.source_key, current.job_id) == ("raw/u/v.mov", later.queued[0])


async def test_the_same_bytes_uploaded_again_after_a_source_failure_is_a_new_job(
    settings: Settings, clients: Clients, enqueuer: Enqueuer, boto: dict[str, Any]
) -> None:
    head = put(boto, settings, "raw/u/v.mp4", b"same bytes")
    first = enqueuer.handle(event(settings, "raw/u/v.mp4", head, datetime.now(UTC)))
    store = JobStore(clients.dynamodb, settings.table)
    message = (await record(clients, settings)).job_message()
    assert message is not None
    lease = await store.claim(message, owner="w", lease_s=60)
    assert isinstance(lease, Lease)
    gone = ErrorInfo(code=Reason.SOURCE_DELETED, message="deleted", retryable=False)
    await store.mark_failed(lease, gone)
    again_head = put(boto, settings, "raw/u/v.mp4", b"same bytes")  # "upload it again"
    assert again_head["ETag"] == head["ETag"]  # an unversioned bucket: the same identity...
    again = enqueuer.handle(event(settings, "raw/u/v.mp4", again_head, datetime.now(UTC)))
    assert again.queued and again.queued != first.queued  # ...but a new job
    current = await record(clients, settings)
    assert (current.status, current.job_id) == (Status.QUEUED, again.queued[0])


async def test_a_deletion_fails_a_queued_job_and_fences_a_running_one(
    settings: Settings, clients: Clients, enqueuer: Enqueuer, boto: dict[str, Any]
) -> None:
    for video in ("queued", "running"):
        key = f"raw/u/{video}.mp4"
        enqueuer.handle(event(settings, key, put(boto, settings, key), datetime.now(UTC)))
    store = JobStore(clients.dynamodb, settings.table)
    running = (await record(clients, settings, "running")).job_message()
    assert running is not None
    lease = await store.claim(running, owner="w", lease_s=60)
    assert isinstance(lease, Lease)
    for video in ("queued", "running"):
        removed = event(settings, f"raw/u/{video}.mp4", {"ContentLength": 0}, datetime.now(UTC))
        removed["Records"][0]["eventName"] = "ObjectRemoved:Delete"
        assert enqueuer.handle(removed).deleted == [f"raw/u/{video}.mp4"]
    queued = await record(clients, settings, "queued")
    assert queued.status is Status.FAILED and queued.error is not None
    assert queued.error.code == Reason.SOURCE_DELETED
    with pytest.raises(Exception, match="deleted"):  # the publish fence refuses
        await store.confirm(lease)


OBJ = {"key": "raw/u/v.mp4", "size": 1, "eTag": "e"}
BUCKET_AB = {"name": "ab"}


async def test_no_event_shape_makes_either_handler_raise(
    settings: Settings, enqueuer: Enqueuer, boto: dict[str, Any]
) -> None:
    shapes: list[Any] = [
        [],
        "a string",
        {"Records": ["x"]},
        {"Records": [{"eventName": "ObjectCreated:Put", "s3": "x"}]},
        {"Records": [{"eventName": "ObjectCreated:Put", "s3": {"bucket": "b", "object": 1}}]},
        {
            "Records": [
                {"eventName": "ObjectCreated:Put", "s3": {"bucket": {"name": "ab"}, "object": OBJ}}
            ]
        },
        {"Records": "not a list"},
        {"source": "aws.s3", "detail-type": "Object Created", "detail": []},
        None,
    ]
    handler = DeadLetterHandler(boto["dynamodb"], settings.table)
    for shape in shapes:
        report = enqueuer.handle(shape)
        assert report.queued == [] and report.errors == []
        assert handler.handle(shape) == {"batchItemFailures": []}
    other = event(settings, "raw/u/v.mp4", {"ContentLength": 5, "ETag": '"e"'}, datetime.now(UTC))
    other["Records"][0]["s3"]["bucket"]["name"] = "someone-elses-bucket"
    report = enqueuer.handle(other)
    assert report.queued == [] and "someone-elses-bucket" in report.ignored[0]


async def test_the_dlq_handler_leaves_a_newer_producers_message_for_a_newer_handler(
    settings: Settings, clients: Clients, enqueuer: Enqueuer, boto: dict[str, Any]
) -> None:
    head = put(boto, settings, "raw/u/v.mp4")
    enqueuer.handle(event(settings, "raw/u/v.mp4", head, datetime.now(UTC)))
    before = await record(clients, settings)
    body = json.loads(before.message or "{}")
    newer = {"messageId": "m-v2", "body": json.dumps({**body, "version": 3, "codec": "av1"})}
    handler = DeadLetterHandler(boto["dynamodb"], settings.table)
    assert handler.handle({"Records": [newer]}) == {
        "batchItemFailures": [{"itemIdentifier": "m-v2"}]
    }
    assert await record(clients, settings) == before  # never marked, never poisoned


async def test_retry_sends_the_job_the_record_describes_now(
    settings: Settings,
    clients: Clients,
    enqueuer: Enqueuer,
    boto: dict[str, Any],
    resources: Resources,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """An upload held behind a running job later ran and failed: retry re-sends that upload."""
    store = JobStore(clients.dynamodb, settings.table)
    first_head = put(boto, settings, "raw/u/v.mp4", b"first")
    enqueuer.handle(event(settings, "raw/u/v.mp4", first_head, datetime.now(UTC)))
    first = (await record(clients, settings)).job_message()
    assert first is not None
    running = await store.claim(first, owner="w1", lease_s=60)
    assert isinstance(running, Lease)
    second_head = put(boto, settings, "raw/u/v.mp4", b"second")
    later = datetime.now(UTC) + timedelta(seconds=1)
    held = enqueuer.handle(event(settings, "raw/u/v.mp4", second_head, later))
    assert held.held == held.queued
    second = next(m for m in messages(boto, resources) if m["job_id"] == held.queued[0])
    await store.mark_completed(running, Published(renditions={}))
    taken = await store.claim(JobMessage.model_validate(second), owner="w2", lease_s=60)
    assert isinstance(taken, Lease)
    await store.mark_failed(taken, ErrorInfo(code=Reason.STALLED, message="x", retryable=True))
    await asyncio.sleep(0)
    code, out, err = await run(settings, capsys, "retry", "v", "--user", "u", "--json")
    assert code == 0, err
    assert json.loads(out)["job"] == held.queued[0]
    assert (await record(clients, settings)).status is Status.QUEUED


async def test_a_deleted_upload_is_never_published_on_a_versioned_bucket(
    settings: Settings, clients: Clients, enqueuer: Enqueuer, boto: dict[str, Any]
) -> None:
    boto["s3"].put_bucket_versioning(
        Bucket=settings.bucket, VersioningConfiguration={"Status": "Enabled"}
    )
    head = put(boto, settings, "raw/u/v.mp4", b"not even a video")
    assert head.get("VersionId")
    enqueuer.handle(event(settings, "raw/u/v.mp4", head, datetime.now(UTC)))
    boto["s3"].delete_object(Bucket=settings.bucket, Key="raw/u/v.mp4")  # a delete marker
    services = await app.connect(clients, settings)
    worker = await app.build_worker(settings, services)
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    try:
        for _ in range(100):
            current = await record(clients, settings)
            if current.status is Status.FAILED:
                break
            await asyncio.sleep(0.1)
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=30)
    assert current.error is not None and current.error.code == Reason.SOURCE_DELETED
    listed = boto["s3"].list_objects_v2(Bucket=settings.bucket, Prefix="transcoded/")
    assert listed.get("KeyCount", 0) == 0
