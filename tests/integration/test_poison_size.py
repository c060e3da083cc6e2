"""Oversized poison still reaches the DLQ: SQS counts attributes in a message's size.

moto 5.2.5 checks only the body, against a default ``MaximumMessageSize`` of 1 MiB (AWS's default
since 2025; 256 KiB before, and still what many queues are set to). So the fault proxy plays
SQS's rule: a ``SendMessage`` whose body plus attributes exceed 256 KiB is refused with
``InvalidParameterValue`` ("Message must be shorter than 262144 bytes"). A body that fits the jobs
queue alone then does not fit the DLQ with the worker's reason attributes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from faults.proxy import FaultProxy, Rule, sqs_message_bytes, sqs_too_long

from transcoder.aws.clients import AwsError, Clients, open_clients
from transcoder.aws.queue import JobQueue
from transcoder.config import Settings
from transcoder.ops.bootstrap import Resources

LIMIT_BYTES = 256 * 1024
DETAIL = "the message is not a job: " + "x" * 2000


@pytest.fixture
async def proxied(aws_endpoint: str, settings: Settings) -> AsyncIterator[Clients]:
    async with FaultProxy(aws_endpoint, seed=5) as proxy:
        proxy.add(
            Rule(
                "error",
                "sqs",
                "SendMessage",
                when=lambda call: sqs_message_bytes(call) > LIMIT_BYTES,
                error=sqs_too_long(LIMIT_BYTES),
            )
        )
        through = settings.model_copy(update={"endpoint_url": proxy.url})
        async with open_clients(through, max_attempts=1) as clients:
            yield clients


@pytest.mark.parametrize(
    ("body_bytes", "attributes"),
    [
        (LIMIT_BYTES - 4096, {"transcoder_reason", "transcoder_detail", "source_message_id"}),
        (LIMIT_BYTES - 200, {"transcoder_reason"}),  # the detail does not fit: the reason does
        (LIMIT_BYTES, set()),  # exactly the limit: only the body fits
    ],
)
async def test_a_poison_body_at_the_size_limit_still_reaches_the_dlq(
    proxied: Clients, resources: Resources, body_bytes: int, attributes: set[str]
) -> None:
    queue = JobQueue(proxied.sqs, resources.queue_url, resources.dlq_url)
    body = "{" + "p" * (body_bytes - 2) + "}"
    await queue.send(body)
    (delivery,) = await queue.receive(1, wait_s=1, visibility_s=30)

    await queue.dead_letter(delivery, reason="invalid_message", detail=DETAIL)

    (letter,) = await queue.dead_letters(1)
    assert letter.body == body
    assert set(letter.attributes) == attributes
    if attributes:
        assert letter.attributes["transcoder_reason"] == "invalid_message"
    assert (await queue.depth()).visible + (await queue.depth()).in_flight == 0


async def test_a_refusal_that_is_not_about_size_is_not_hidden(
    proxied: Clients, resources: Resources, settings: Settings
) -> None:
    missing = resources.dlq_url.rsplit("/", 1)[0] + "/no-such-queue"
    queue = JobQueue(proxied.sqs, resources.queue_url, missing)
    await queue.send("{}")
    (delivery,) = await queue.receive(1, wait_s=1, visibility_s=30)
    with pytest.raises(AwsError, match=r"NonExistentQueue|QueueDoesNotExist"):
        await queue.dead_letter(delivery, reason="invalid_message", detail="x")
    assert (await queue.depth()).in_flight == 1  # still in the jobs queue, not deleted
