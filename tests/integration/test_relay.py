"""``enqueue_lambda.relay`` stands in for S3 -> Lambda in docker-compose: against the moto server, a
real S3 notification to the uploads queue becomes a QUEUED job and one job message."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import boto3
from botocore.config import Config

from enqueue_lambda import relay
from transcoder.config import Settings
from transcoder.domain.job import JobMessage
from transcoder.domain.record import record_key
from transcoder.ops.bootstrap import Resources

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_sqs import SQSClient


def sync_clients(settings: Settings) -> tuple[S3Client, SQSClient]:
    config = Config(region_name=settings.region, s3={"addressing_style": "path"})
    endpoint = settings.endpoint_url
    return (
        boto3.client("s3", endpoint_url=endpoint, config=config),
        boto3.client("sqs", endpoint_url=endpoint, config=config),
    )


def relay_env(settings: Settings) -> dict[str, str]:
    assert settings.endpoint_url
    return {
        "AWS_ENDPOINT_URL": settings.endpoint_url,
        "AWS_REGION": settings.region,
        "TRANSCODER_BUCKET": settings.bucket,
        "TRANSCODER_QUEUE": settings.queue,
        "TRANSCODER_TABLE": settings.table,
    }


async def test_relay_turns_a_raw_upload_notification_into_one_job(
    settings: Settings, resources: Resources
) -> None:
    s3, sqs = sync_clients(settings)
    uploads = relay.wire(s3, sqs, settings.bucket, uploads_queue=f"{settings.queue}-uploads")
    assert (
        relay.wire(s3, sqs, settings.bucket, f"{settings.queue}-uploads") == uploads
    )  # idempotent
    s3.put_object(Bucket=settings.bucket, Key="raw/alice/clip-1.mp4", Body=b"\0" * 2048)
    s3.put_object(Bucket=settings.bucket, Key="elsewhere/ignored.mp4", Body=b"\0" * 2048)
    relayer = relay.Relay(
        sqs, uploads, relay.enqueuer_from_env(relay_env(settings), sqs), wait_time_s=1
    )
    deadline = time.monotonic() + 30
    while job_record(settings, "alice", "clip-1") is None and time.monotonic() < deadline:
        relayer.poll()
    item = job_record(settings, "alice", "clip-1")
    assert item is not None, "the upload never became a job"
    assert item["status"]["S"] == "QUEUED"
    messages = sqs.receive_message(
        QueueUrl=resources.queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1
    ).get("Messages", [])
    bodies = [JobMessage.model_validate_json(m["Body"]) for m in messages]
    assert [(b.key, b.user_id, b.video_id) for b in bodies] == [
        ("raw/alice/clip-1.mp4", "alice", "clip-1")
    ]
    assert relayer.poll() == 0  # the uploads queue is drained; nothing is handled twice


def job_record(settings: Settings, user_id: str, video_id: str) -> dict[str, Any] | None:
    dynamodb = boto3.client(
        "dynamodb", endpoint_url=settings.endpoint_url, region_name=settings.region
    )
    return dynamodb.get_item(
        TableName=settings.table, Key=record_key(user_id, video_id), ConsistentRead=True
    ).get("Item")


async def test_relay_leaves_an_event_it_could_not_handle_for_a_retry(
    settings: Settings, resources: Resources
) -> None:
    s3, sqs = sync_clients(settings)
    uploads = relay.wire(s3, sqs, settings.bucket, uploads_queue=f"{settings.queue}-uploads")
    broken = relay.enqueuer_from_env(
        {**relay_env(settings), "TRANSCODER_TABLE": f"{settings.table}-missing"}, sqs
    )
    s3.put_object(Bucket=settings.bucket, Key="raw/bob/v1.mp4", Body=b"\0" * 1024)
    relayer = relay.Relay(sqs, uploads, broken, wait_time_s=1)
    for _ in range(5):
        relayer.poll()  # the handler raises for the upload; s3:TestEvent, if any, is dropped
    attributes = sqs.get_queue_attributes(
        QueueUrl=uploads, AttributeNames=["ApproximateNumberOfMessagesNotVisible"]
    )["Attributes"]
    assert int(attributes["ApproximateNumberOfMessagesNotVisible"]) >= 1  # kept, not deleted
