"""Job events on the emulator, read the way an app reads them: an EventBridge rule matching
source ``transcoder`` sends them to the app's SQS queue, and the test receives from that queue.

Every publisher runs for real: the worker's settlement (aiobotocore, wired by ``app``), the full
worker loop, the dead-letter handler and the enqueue Lambda (boto3).
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest
from botocore.config import Config

from enqueue_lambda import bus as lambda_bus
from enqueue_lambda.dlq import DeadLetterHandler
from enqueue_lambda.handler import EnqueueConfig, Enqueuer, s3_event_for
from transcoder.aws.clients import Clients
from transcoder.config import Settings
from transcoder.domain.job import (
    JobMessage,
    Published,
    RenditionRecord,
    RenditionStatus,
    Status,
    output_key,
)
from transcoder.domain.transitions import Lease
from transcoder.ops.bootstrap import Resources, bootstrap
from transcoder.runtime import app
from transcoder.runtime.decision import Completed
from transcoder.runtime.settlement import Settler


def unique(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(4)}"


@pytest.fixture
def events_settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"event_bus": unique("app-events")})


@pytest.fixture
def boto(events_settings: Settings) -> dict[str, Any]:
    config = Config(region_name=events_settings.region, retries={"max_attempts": 1})
    url = events_settings.endpoint_url
    return {n: boto3.client(n, endpoint_url=url, config=config) for n in ("s3", "sqs", "events")}


@pytest.fixture
async def wired(
    clients: Clients, events_settings: Settings, boto: dict[str, Any]
) -> tuple[Resources, str]:
    """The fleet (bootstrap creates the bus) and an app queue subscribed to its events."""
    resources = await bootstrap(clients, events_settings)
    sqs, events, bus = boto["sqs"], boto["events"], events_settings.event_bus
    app_queue = sqs.create_queue(QueueName=unique("app-inbox"))["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=app_queue, AttributeNames=["QueueArn"])
    rule = unique("video-ready")
    events.put_rule(
        Name=rule, EventBusName=bus, EventPattern=json.dumps({"source": ["transcoder"]})
    )
    events.put_targets(
        Rule=rule,
        EventBusName=bus,
        Targets=[{"Id": "app", "Arn": arn["Attributes"]["QueueArn"]}],
    )
    return resources, app_queue


def received(sqs: Any, queue_url: str, count: int = 1, timeout_s: float = 10) -> list[Any]:
    """The events the app's queue got, as EventBridge delivers them (the full envelope)."""
    found: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout_s
    while len(found) < count and time.monotonic() < deadline:
        got = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1)
        found += [json.loads(m["Body"]) for m in got.get("Messages", [])]
    return found


def upload(boto: dict[str, Any], settings: Settings, key: str, body: bytes) -> dict[str, Any]:
    boto["s3"].put_object(Bucket=settings.bucket, Key=key, Body=body)
    head = boto["s3"].head_object(Bucket=settings.bucket, Key=key)
    return s3_event_for(settings.bucket, key, dict(head), settings.region)


def enqueuer(settings: Settings, resources: Resources, events: Any = None) -> Enqueuer:
    config = Config(region_name=settings.region, retries={"max_attempts": 1})
    url = settings.endpoint_url
    limits = EnqueueConfig(table=settings.table, queue_url=resources.queue_url)
    dynamodb = boto3.client("dynamodb", endpoint_url=url, config=config)
    return Enqueuer(limits, dynamodb, boto3.client("sqs", endpoint_url=url, config=config), events)


async def test_the_worker_settlement_announces_a_completed_job(
    clients: Clients,
    events_settings: Settings,
    wired: tuple[Resources, str],
    boto: dict[str, Any],
) -> None:
    resources, app_queue = wired
    enqueuer(events_settings, resources).handle(
        upload(boto, events_settings, "raw/u1/v1.mp4", b"video")
    )
    services = await app.connect(clients, events_settings)
    assert services.events is not None and services.events.bus == events_settings.event_bus
    (delivery,) = await services.queue.receive(1, wait_s=1, visibility_s=60)
    message = JobMessage.model_validate_json(delivery.body)
    lease = await services.store.claim(message, owner="w1", lease_s=60)
    assert isinstance(lease, Lease)
    key = output_key("720p", "u1", "v1")
    made = RenditionRecord(
        status=RenditionStatus.COMPLETED, key=key, width=1280, height=720, bytes=4321
    )
    settler = Settler(services.queue, services.store, events=services.events)
    settled = await settler.commit(Completed(lease, Published(renditions={"720p": made})), delivery)
    assert settled.record is not None and settled.record.status is Status.COMPLETED
    (event,) = received(boto["sqs"], app_queue)
    assert (event["source"], event["detail-type"]) == ("transcoder", "Video Transcoded")
    detail = event["detail"]
    assert (detail["job_id"], detail["user_id"], detail["video_id"]) == (message.job_id, "u1", "v1")
    assert detail["status"] == "COMPLETED"
    assert detail["renditions"]["720p"]["key"] == key
    assert detail["renditions"]["720p"]["bytes"] == 4321
    assert detail["source"]["key"] == "raw/u1/v1.mp4"
    assert detail["poster"] is None and detail["hls"] is None and detail["error"] is None
    assert detail["completed_at"] and detail["trace_id"] == message.trace_id
    assert detail["event_id"].startswith(f"{message.job_id}:COMPLETED:")


async def test_the_running_worker_announces_a_job_it_fails(
    clients: Clients,
    events_settings: Settings,
    wired: tuple[Resources, str],
    boto: dict[str, Any],
) -> None:
    """A real worker loop: the upload was deleted before the worker got to it."""
    resources, app_queue = wired
    boto["s3"].put_bucket_versioning(
        Bucket=events_settings.bucket, VersioningConfiguration={"Status": "Enabled"}
    )
    enqueuer(events_settings, resources).handle(
        upload(boto, events_settings, "raw/u1/gone.mp4", b"soon deleted")
    )
    boto["s3"].delete_object(Bucket=events_settings.bucket, Key="raw/u1/gone.mp4")
    services = await app.connect(clients, events_settings)
    worker = await app.build_worker(events_settings, services)
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    try:
        events = await asyncio.to_thread(received, boto["sqs"], app_queue, 1, 30)
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=30)
    (event,) = events
    assert event["detail-type"] == "Video Failed"
    assert event["detail"]["video_id"] == "gone"
    assert event["detail"]["error"]["code"] == "source_deleted"
    assert event["detail"]["error"]["retryable"] is False
    assert event["detail"]["failed_at"] and event["detail"]["attempts"] == 1


async def test_the_dead_letter_handler_announces_an_exhausted_job(
    events_settings: Settings,
    wired: tuple[Resources, str],
    boto: dict[str, Any],
) -> None:
    resources, app_queue = wired
    enqueuer(events_settings, resources).handle(
        upload(boto, events_settings, "raw/u2/v2.mp4", b"video")
    )
    for _ in range(4):  # past maxReceiveCount: SQS itself moves the message to the DLQ
        boto["sqs"].receive_message(
            QueueUrl=resources.queue_url, MaxNumberOfMessages=10, VisibilityTimeout=0
        )
    letters = boto["sqs"].receive_message(
        QueueUrl=resources.dlq_url, MaxNumberOfMessages=10, VisibilityTimeout=0
    )["Messages"]
    records = [{"messageId": m["MessageId"], "body": m["Body"]} for m in letters]
    # By ARN this time: TRANSCODER_EVENT_BUS takes either.
    bus_arn = boto["events"].describe_event_bus(Name=events_settings.event_bus)["Arn"]
    events = lambda_bus.build(bus_arn, endpoint_url=events_settings.endpoint_url)
    dynamodb = boto3.client("dynamodb", endpoint_url=events_settings.endpoint_url)
    handler = DeadLetterHandler(dynamodb, events_settings.table, events)
    assert handler.handle({"Records": records}) == {"batchItemFailures": []}
    (event,) = received(boto["sqs"], app_queue)
    assert event["detail-type"] == "Video Failed"
    assert event["detail"]["user_id"] == "u2"
    assert event["detail"]["error"]["code"] == "retries_exhausted"
    assert event["detail"]["error"]["retryable"] is True  # an operator may retry it
    # The DLQ delivers again (at least once): the record is already marked, nothing is re-sent.
    assert handler.handle({"Records": records}) == {"batchItemFailures": []}
    assert received(boto["sqs"], app_queue, timeout_s=2) == []


async def test_the_enqueue_lambda_announces_a_rejected_upload(
    events_settings: Settings,
    wired: tuple[Resources, str],
    boto: dict[str, Any],
) -> None:
    resources, app_queue = wired
    events = lambda_bus.build(events_settings.event_bus, endpoint_url=events_settings.endpoint_url)
    lambda_ = enqueuer(events_settings, resources, events)
    report = lambda_.handle(upload(boto, events_settings, "raw/u3/notes.txt", b"not a video"))
    assert report.rejected and not report.queued
    (event,) = received(boto["sqs"], app_queue)
    assert event["detail-type"] == "Video Failed"
    assert (event["detail"]["user_id"], event["detail"]["video_id"]) == ("u3", "notes")
    assert event["detail"]["error"]["code"] == "unsupported_extension"
    assert event["detail"]["renditions"] == {} and event["detail"]["attempts"] == 0
    assert datetime.fromisoformat(event["detail"]["failed_at"]) <= datetime.now(UTC)
