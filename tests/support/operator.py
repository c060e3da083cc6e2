"""boto3 on the emulator, as an operator or the Lambdas see it; the operator CLI run in-process."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING, Any

import boto3
import pytest
from botocore.config import Config
from records import as_dict, poke_arguments

from enqueue_lambda.dlq import DeadLetterHandler
from transcoder.config import Settings
from transcoder.domain.record import record_key
from transcoder.ops import commands as ops
from transcoder.ops.bootstrap import Resources

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_sqs import SQSClient


BUCKET = "media-bucket"


class Aws:
    """boto3 clients on the emulator (as in Lambda) and the reads and writes the tests need."""

    def __init__(self, settings: Settings, resources: Resources) -> None:
        config = Config(region_name=settings.region, retries={"max_attempts": 1})
        url = settings.endpoint_url
        self.dynamodb: DynamoDBClient = boto3.client("dynamodb", endpoint_url=url, config=config)
        self.sqs: SQSClient = boto3.client("sqs", endpoint_url=url, config=config)
        self.table = settings.table
        self.queue_url = resources.queue_url
        self.dlq_url = resources.dlq_url

    def record(self, user: str, video: str) -> dict[str, Any]:
        key = record_key(user, video)
        item = self.dynamodb.get_item(TableName=self.table, Key=key, ConsistentRead=True)
        return as_dict(item["Item"]) if "Item" in item else {}

    def set(self, user: str, video: str, **values: Any) -> None:
        self.dynamodb.update_item(**poke_arguments(self.table, user, video, **values))

    def receive(self, url: str, *, hold_s: int = 60) -> list[dict[str, Any]]:
        """Every message in a queue, held invisible for ``hold_s`` (0: left visible)."""
        found: dict[str, dict[str, Any]] = {}
        for _ in range(10):
            got = self.sqs.receive_message(
                QueueUrl=url,
                MaxNumberOfMessages=10,
                VisibilityTimeout=hold_s,
                MessageSystemAttributeNames=["All"],
                MessageAttributeNames=["All"],
            ).get("Messages", [])
            new = {m["MessageId"]: dict(m) for m in got if m["MessageId"] not in found}
            if not new:
                break
            found.update(new)
        return list(found.values())

    def messages(self) -> list[dict[str, Any]]:
        return [json.loads(m["Body"]) for m in self.receive(self.queue_url)]

    def dead_letter_and_mark(self) -> None:
        """Receive every job past maxReceiveCount (3) so SQS moves it to the DLQ, then run the DLQ
        handler on them; the messages stay in the DLQ, as when no Lambda is attached to it."""
        for _ in range(4):
            self.sqs.receive_message(
                QueueUrl=self.queue_url, MaxNumberOfMessages=10, VisibilityTimeout=0
            )
        records = [
            {"messageId": m["MessageId"], "body": m["Body"], "messageAttributes": {}}
            for m in self.receive(self.dlq_url, hold_s=0)
        ]
        handler = DeadLetterHandler(self.dynamodb, self.table)
        assert handler.handle({"Records": records}) == {"batchItemFailures": []}


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="transcoder")
    ops.add_commands(root.add_subparsers(dest="command", required=True))
    return root


async def run(
    settings: Settings, capsys: pytest.CaptureFixture[str], *argv: str
) -> tuple[int, str, str]:
    args = parser().parse_args(list(argv))
    code = await args.run(settings, args)
    captured = capsys.readouterr()
    return int(code), captured.out, captured.err


def dlq_depth(aws: Aws, dlq_url: str) -> int:
    """Messages in the DLQ, visible or held."""
    attributes = aws.sqs.get_queue_attributes(
        QueueUrl=dlq_url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return sum(int(v) for v in attributes.values())
