"""Create (idempotently) what the fleet needs: the bucket, the jobs queue and its DLQ, the table,
and the event bus when ``TRANSCODER_EVENT_BUS`` names one that is not the account's ``default``.

Used by ``transcoder bootstrap`` against LocalStack or the embedded emulator; in AWS the
CloudFormation template in ``deploy/`` owns these resources with the same settings.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass

from botocore.exceptions import ClientError

from transcoder.aws.clients import Clients, error_code
from transcoder.config import Settings
from transcoder.domain.job import STATUS_INDEX
from transcoder.logs import get_logger

log = get_logger(__name__)
DLQ_RETENTION_S = 14 * 24 * 3600


@dataclass(frozen=True, slots=True)
class Resources:
    bucket: str
    queue_url: str
    dlq_url: str
    table: str


async def ensure_bucket(clients: Clients, settings: Settings) -> None:
    kwargs: dict[str, object] = {}
    if settings.region != "us-east-1":
        kwargs["CreateBucketConfiguration"] = {"LocationConstraint": settings.region}
    try:
        await clients.s3.create_bucket(Bucket=settings.bucket, **kwargs)  # type: ignore[arg-type]
    except ClientError as exc:
        if error_code(exc) not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
            raise


async def ensure_queue(clients: Clients, name: str, attributes: dict[str, str]) -> str:
    try:
        response = await clients.sqs.create_queue(QueueName=name, Attributes=attributes)  # type: ignore[arg-type]
        return response["QueueUrl"]
    except ClientError as exc:
        if error_code(exc) not in ("QueueAlreadyExists", "QueueNameExists"):
            raise
    url = (await clients.sqs.get_queue_url(QueueName=name))["QueueUrl"]
    await clients.sqs.set_queue_attributes(QueueUrl=url, Attributes=attributes)  # type: ignore[arg-type]
    return url


async def ensure_table(clients: Clients, table: str) -> None:
    try:
        await clients.dynamodb.create_table(
            TableName=table,
            BillingMode="PAY_PER_REQUEST",
            AttributeDefinitions=[
                {"AttributeName": "pk", "AttributeType": "S"},
                {"AttributeName": "sk", "AttributeType": "S"},
                {"AttributeName": "status", "AttributeType": "S"},
                {"AttributeName": "updated_at", "AttributeType": "S"},
            ],
            KeySchema=[
                {"AttributeName": "pk", "KeyType": "HASH"},
                {"AttributeName": "sk", "KeyType": "RANGE"},
            ],
            GlobalSecondaryIndexes=[
                {
                    "IndexName": STATUS_INDEX,
                    "KeySchema": [
                        {"AttributeName": "status", "KeyType": "HASH"},
                        {"AttributeName": "updated_at", "KeyType": "RANGE"},
                    ],
                    "Projection": {"ProjectionType": "ALL"},
                }
            ],
        )
    except ClientError as exc:
        if error_code(exc) != "ResourceInUseException":
            raise
    for _ in range(60):
        described = await clients.dynamodb.describe_table(TableName=table)
        if described["Table"].get("TableStatus") == "ACTIVE":
            return
        await asyncio.sleep(1)
    raise RuntimeError(f"table {table} did not become ACTIVE")


async def ensure_event_bus(clients: Clients, bus: str | None) -> None:
    """Create the job events' bus by name; ``default`` and ARNs (someone else's) are left alone."""
    if not bus or bus == "default" or bus.startswith("arn:") or clients.events is None:
        return
    try:
        await clients.events.create_event_bus(Name=bus)
    except ClientError as exc:
        if error_code(exc) != "ResourceAlreadyExistsException":
            raise


async def bootstrap(clients: Clients, settings: Settings) -> Resources:
    """Create or update every resource; safe to run any number of times."""
    await ensure_bucket(clients, settings)
    dlq_url = await ensure_queue(
        clients,
        settings.dead_letter_queue,
        {"MessageRetentionPeriod": str(DLQ_RETENTION_S), "SqsManagedSseEnabled": "true"},
    )
    dlq_arn = (
        await clients.sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])
    )["Attributes"]["QueueArn"]
    redrive = {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": settings.max_receive_count}
    queue_url = await ensure_queue(
        clients,
        settings.queue,
        {
            "VisibilityTimeout": str(settings.visibility_timeout_s),
            "ReceiveMessageWaitTimeSeconds": str(settings.wait_time_s),
            "RedrivePolicy": json.dumps(redrive),
            "SqsManagedSseEnabled": "true",
        },
    )
    await ensure_table(clients, settings.table)
    await ensure_event_bus(clients, settings.event_bus)
    log.info("bootstrap.done", bucket=settings.bucket, queue=queue_url, dlq=dlq_url)
    return Resources(settings.bucket, queue_url, dlq_url, settings.table)
