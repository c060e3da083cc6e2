"""The SQS jobs queue: receive, delete, extend, dead-letter, depth; SDK errors translated.

A receipt handle that SQS no longer accepts (``ReceiptHandleIsInvalid``, ``MessageNotInflight``, an
expired handle) means another receive owns the message now: that is ``LeaseLost``, not an error to
retry.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from botocore.exceptions import ClientError

from transcoder.aws import error_code, translated
from transcoder.errors import LeaseLost

if TYPE_CHECKING:
    from types_aiobotocore_sqs import SQSClient

LOST_HANDLE_CODES = frozenset(
    {
        "ReceiptHandleIsInvalid",
        "AWS.SimpleQueueService.ReceiptHandleIsInvalid",
        "MessageNotInflight",
        "AWS.SimpleQueueService.MessageNotInflight",
        "InvalidParameterValue",  # "The receipt handle has expired"
    }
)
MAX_VISIBILITY_S = 43_200  # SQS's cap on one message's total invisibility (12 hours)


@dataclass(frozen=True, slots=True)
class Delivery:
    """One received message; ``received_at`` is this process's monotonic clock at receive."""

    message_id: str
    receipt_handle: str
    body: str
    receive_count: int
    received_at: float


@dataclass(frozen=True, slots=True)
class Depth:
    visible: int
    in_flight: int
    delayed: int


async def resolve_url(client: SQSClient, name_or_url: str) -> str:
    if name_or_url.startswith(("http://", "https://")):
        return name_or_url
    with translated("sqs.get_queue_url"):
        response = await client.get_queue_url(QueueName=name_or_url)
    return response["QueueUrl"]


class JobQueue:
    """The jobs queue and its dead-letter queue."""

    def __init__(self, client: SQSClient, url: str, dlq_url: str | None) -> None:
        self._client = client
        self.url = url
        self.dlq_url = dlq_url

    async def receive(self, max_messages: int, *, wait_s: int, visibility_s: int) -> list[Delivery]:
        with translated("sqs.receive_message"):
            response = await self._client.receive_message(
                QueueUrl=self.url,
                MaxNumberOfMessages=max(1, min(10, max_messages)),
                WaitTimeSeconds=wait_s,
                VisibilityTimeout=visibility_s,
                MessageSystemAttributeNames=["ApproximateReceiveCount"],
            )
        now = time.monotonic()
        return [
            Delivery(
                message_id=m["MessageId"],
                receipt_handle=m["ReceiptHandle"],
                body=m.get("Body", ""),
                receive_count=int(m.get("Attributes", {}).get("ApproximateReceiveCount", "1")),
                received_at=now,
            )
            for m in response.get("Messages", [])
        ]

    async def delete(self, delivery: Delivery) -> None:
        try:
            with translated("sqs.delete_message"):
                await self._client.delete_message(
                    QueueUrl=self.url, ReceiptHandle=delivery.receipt_handle
                )
        except ClientError as exc:
            if error_code(exc) in LOST_HANDLE_CODES:
                raise LeaseLost(f"delete refused: {error_code(exc)}") from exc
            raise

    async def set_visibility(self, delivery: Delivery, seconds: int) -> None:
        """Make the message invisible for ``seconds`` from now (0 = visible at once)."""
        try:
            with translated("sqs.change_message_visibility"):
                await self._client.change_message_visibility(
                    QueueUrl=self.url,
                    ReceiptHandle=delivery.receipt_handle,
                    VisibilityTimeout=max(0, min(MAX_VISIBILITY_S, int(seconds))),
                )
        except ClientError as exc:
            if error_code(exc) in LOST_HANDLE_CODES:
                raise LeaseLost(f"visibility change refused: {error_code(exc)}") from exc
            raise

    async def dead_letter(self, delivery: Delivery, *, reason: str, detail: str) -> None:
        """Move a message to the DLQ now (body preserved), then delete it from the jobs queue."""
        if self.dlq_url is None:
            raise RuntimeError("no dead-letter queue configured")
        with translated("sqs.send_message(dlq)"):
            await self._client.send_message(
                QueueUrl=self.dlq_url,
                MessageBody=delivery.body or "(empty body)",
                MessageAttributes={
                    "transcoder_reason": {"DataType": "String", "StringValue": reason},
                    "transcoder_detail": {"DataType": "String", "StringValue": detail[:1000]},
                    "source_message_id": {"DataType": "String", "StringValue": delivery.message_id},
                },
            )
        await self.delete(delivery)

    async def send(self, body: str, *, delay_s: int = 0) -> str:
        with translated("sqs.send_message"):
            response = await self._client.send_message(
                QueueUrl=self.url, MessageBody=body, DelaySeconds=delay_s
            )
        return response["MessageId"]

    async def depth(self, url: str | None = None) -> Depth:
        with translated("sqs.get_queue_attributes"):
            response = await self._client.get_queue_attributes(
                QueueUrl=url or self.url,
                AttributeNames=[
                    "ApproximateNumberOfMessages",
                    "ApproximateNumberOfMessagesNotVisible",
                    "ApproximateNumberOfMessagesDelayed",
                ],
            )
        attributes = response.get("Attributes", {})
        return Depth(
            visible=int(attributes.get("ApproximateNumberOfMessages", 0)),
            in_flight=int(attributes.get("ApproximateNumberOfMessagesNotVisible", 0)),
            delayed=int(attributes.get("ApproximateNumberOfMessagesDelayed", 0)),
        )

    async def max_receive_count(self, default: int) -> int:
        """``maxReceiveCount`` from the queue's redrive policy (the source of truth)."""
        with translated("sqs.get_queue_attributes"):
            response = await self._client.get_queue_attributes(
                QueueUrl=self.url, AttributeNames=["RedrivePolicy"]
            )
        policy = response.get("Attributes", {}).get("RedrivePolicy")
        if not policy:
            return default
        return int(json.loads(policy).get("maxReceiveCount", default))
