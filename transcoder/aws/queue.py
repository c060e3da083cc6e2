"""The SQS jobs queue: receive, delete, extend, dead-letter, depth; SDK errors translated.

A receipt handle that SQS no longer accepts (``ReceiptHandleIsInvalid``, ``MessageNotInflight``, an
expired handle) means another receive owns the message now: that is ``LeaseLost``, not an error to
retry.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from transcoder.aws.clients import error_code, translated
from transcoder.domain.errors import AwsUnavailable, LeaseLost
from transcoder.logs import get_logger

if TYPE_CHECKING:
    from types_aiobotocore_sqs import SQSClient
    from types_aiobotocore_sqs.type_defs import MessageAttributeValueTypeDef

log = get_logger(__name__)
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
MAX_DELAY_S = 900  # SQS's cap on DelaySeconds
# What SQS answers a message over MaximumMessageSize (body plus attributes).
TOO_LONG_CODES = frozenset({"InvalidParameterValue", "MessageTooLong"})


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


@contextlib.contextmanager
def _unavailable_on_client_error(operation: str) -> Iterator[None]:
    try:
        yield
    except ClientError as exc:
        raise AwsUnavailable(f"{operation}: {error_code(exc)}") from exc


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
        """Long-poll for up to ``max_messages``; every failure is ``AwsUnavailable``.

        Even a client error (the queue deleted, a restarted endpoint that lost it) only means
        there is nothing to receive now: the worker backs off and tries again, it never exits.
        """
        with _unavailable_on_client_error("sqs.receive_message"), translated("sqs.receive_message"):
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

    async def requeue(self, delivery: Delivery, *, delay_s: int = 0) -> str:
        """Send the body again as a new message (receive count 1), then delete this delivery.

        For give-backs on the last allowed receive: making the message visible again would let
        SQS move it to the DLQ at its next receive although the job never failed. Between the
        send and the delete both copies exist; the job record's fence makes that harmless.
        """
        message_id = await self.send(delivery.body, delay_s=max(0, min(MAX_DELAY_S, delay_s)))
        await self.delete(delivery)
        return message_id

    async def dead_letter(self, delivery: Delivery, *, reason: str, detail: str) -> None:
        """Move a message to the DLQ now (body preserved), then delete it from the jobs queue.

        SQS's size limit counts message attributes with the body, so a body near the limit fits
        the jobs queue but not the DLQ with our attributes: SQS refuses it
        (``InvalidParameterValue``, "Message must be shorter than ..."). Rather than loop on that
        refusal, the letter goes with less: the reason without the detail, then the body alone.
        The body is never cut.
        """
        if self.dlq_url is None:
            raise RuntimeError("no dead-letter queue configured")
        body = delivery.body or "(empty body)"
        tiers = dead_letter_attributes(delivery, reason, detail)
        for index, attributes in enumerate(tiers):
            try:
                with translated("sqs.send_message(dlq)"):
                    await self._client.send_message(
                        QueueUrl=self.dlq_url, MessageBody=body, MessageAttributes=attributes
                    )
                break
            except ClientError as exc:
                if error_code(exc) not in TOO_LONG_CODES or index == len(tiers) - 1:
                    raise
                log.warning(
                    "job.dead_letter_shortened",
                    body_bytes=len(body.encode()),
                    attributes=sorted(tiers[index + 1]),
                    error=str(exc),
                )
        await self.delete(delivery)

    async def send(self, body: str, *, delay_s: int = 0) -> str:
        with translated("sqs.send_message"):
            response = await self._client.send_message(
                QueueUrl=self.url, MessageBody=body, DelaySeconds=delay_s
            )
        return response["MessageId"]

    async def depth(self, url: str | None = None) -> Depth:
        with (
            _unavailable_on_client_error("sqs.get_queue_attributes"),
            translated("sqs.get_queue_attributes"),
        ):
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

    # ------------------------------------------------ the DLQ, for operator commands

    def _dead_letter_url(self) -> str:
        if self.dlq_url is None:
            raise RuntimeError("no dead-letter queue configured")
        return self.dlq_url

    async def dead_letters(self, limit: int, *, hold_s: int = 120) -> list[DeadLetter]:
        """Up to ``limit`` DLQ messages, each held invisible for ``hold_s`` seconds.

        SQS has no peek: reading is receiving. Pass the letters to ``release`` (visible again at
        once) or ``resend`` before the hold ends. The loop is bounded by ``limit`` receives and
        stops at the first empty one (``WaitTimeSeconds=1`` asks every SQS server).
        """
        url = self._dead_letter_url()
        letters: dict[str, DeadLetter] = {}
        for _ in range(limit):
            if len(letters) >= limit:
                break
            with translated("sqs.receive_message(dlq)"):
                response = await self._client.receive_message(
                    QueueUrl=url,
                    MaxNumberOfMessages=max(1, min(10, limit - len(letters))),
                    WaitTimeSeconds=1,
                    VisibilityTimeout=hold_s,
                    MessageSystemAttributeNames=["All"],
                    MessageAttributeNames=["All"],
                )
            messages = response.get("Messages", [])
            if not messages:
                break
            for message in messages:
                letters.setdefault(message["MessageId"], DeadLetter.of(dict(message)))
        return list(letters.values())

    async def release(self, letters: list[DeadLetter]) -> None:
        """Make held dead letters visible again (a letter already gone is fine)."""
        for letter in letters:
            try:
                with translated("sqs.change_message_visibility(dlq)"):
                    await self._client.change_message_visibility(
                        QueueUrl=self._dead_letter_url(),
                        ReceiptHandle=letter.receipt_handle,
                        VisibilityTimeout=0,
                    )
            except ClientError as exc:
                if error_code(exc) not in LOST_HANDLE_CODES:
                    raise

    async def resend(self, letter: DeadLetter, *, body: str | None = None) -> str:
        """Send a dead letter back to the jobs queue, attributes unchanged (its body, or
        ``body``: a chunked job's part is redriven as its job); then delete it from the DLQ. A
        failed send leaves it in the DLQ. Returns the new message id."""
        attributes: dict[str, MessageAttributeValueTypeDef] = {
            name: {"DataType": "String", "StringValue": value}
            for name, value in letter.attributes.items()
        }
        with translated("sqs.send_message(redrive)"):
            response = await self._client.send_message(
                QueueUrl=self.url, MessageBody=body or letter.body, MessageAttributes=attributes
            )
        await self.discard(letter)
        return response["MessageId"]

    async def discard(self, letter: DeadLetter) -> None:
        """Delete a dead letter (another letter of the same job was redriven for it)."""
        with translated("sqs.delete_message(dlq)"):
            await self._client.delete_message(
                QueueUrl=self._dead_letter_url(), ReceiptHandle=letter.receipt_handle
            )

    async def start_redrive(self) -> str:
        """Start SQS's message-move task (DLQ -> jobs queue); returns its task handle.

        Raises (``AwsUnavailable`` or ``ClientError``) where the endpoint lacks the API, as moto
        5.2 does; callers fall back to ``dead_letters`` + ``resend``.
        """
        source = await self._queue_arn(self._dead_letter_url())
        destination = await self._queue_arn(self.url)
        with translated("sqs.start_message_move_task"):
            response = await self._client.start_message_move_task(
                SourceArn=source, DestinationArn=destination
            )
        return response["TaskHandle"]

    async def _queue_arn(self, url: str) -> str:
        with translated("sqs.get_queue_attributes"):
            response = await self._client.get_queue_attributes(
                QueueUrl=url, AttributeNames=["QueueArn"]
            )
        return response["Attributes"]["QueueArn"]


def dead_letter_attributes(
    delivery: Delivery, reason: str, detail: str
) -> list[dict[str, MessageAttributeValueTypeDef]]:
    """The DLQ attributes, most first; each next one is smaller (the last is none at all)."""

    def string(value: str) -> MessageAttributeValueTypeDef:
        return {"DataType": "String", "StringValue": value}

    short = {"transcoder_reason": string(reason[:100])}
    full = {
        "transcoder_reason": string(reason),
        "transcoder_detail": string(detail[:1000] or "-"),
        "source_message_id": string(delivery.message_id),
    }
    return [full, short, {}]


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A message received from the DLQ by an operator command."""

    message_id: str
    receipt_handle: str
    body: str
    attributes: dict[str, str]  # string message attributes, e.g. transcoder_reason
    sent_at_ms: int
    receive_count: int

    @classmethod
    def of(cls, message: dict[str, Any]) -> DeadLetter:
        system = message.get("Attributes", {})
        attributes = {
            name: str(value["StringValue"])
            for name, value in message.get("MessageAttributes", {}).items()
            if value.get("DataType", "").startswith("String") and "StringValue" in value
        }
        return cls(
            message_id=message["MessageId"],
            receipt_handle=message["ReceiptHandle"],
            body=message.get("Body", ""),
            attributes=attributes,
            sent_at_ms=int(system.get("SentTimestamp", 0)),
            receive_count=int(system.get("ApproximateReceiveCount", 0)),
        )
