"""Local stand-in for S3 -> Lambda: S3 notifications to an SQS queue, relayed to the real handler.

LocalStack's community edition runs Python Lambdas only with Docker-in-Docker, so the
docker-compose stack wires the bucket's ``raw/`` notifications to an "uploads" SQS queue instead,
and this relay long-polls that queue and passes each S3 event, unchanged, to
``enqueue_lambda.handler.Enqueuer.handle``: the same code that runs in Lambda, fed the same event.

``python -m enqueue_lambda.relay wire``  creates the uploads queue (with a policy letting only the
bucket send to it) and puts the bucket's notification configuration. Idempotent.
``python -m enqueue_lambda.relay run``   relays until SIGTERM/SIGINT (``--once`` for one poll).

A message is deleted only after the handler returned; if the handler raises (an AWS outage, or
``EnqueueIncomplete``), the message comes back after the uploads queue's visibility timeout,
which is what Lambda's own retry of an asynchronous S3 invocation would do.

Configuration is the worker's own variables (``TRANSCODER_BUCKET``, ``TRANSCODER_QUEUE``,
``TRANSCODER_TABLE``, ``TRANSCODER_MAX_INPUT_BYTES``; ``AWS_ENDPOINT_URL``, ``AWS_REGION``) plus
the enqueue Lambda's optional ones (``TRANSCODER_ALLOWED_EXTENSIONS``, ``TRANSCODER_RENDITIONS``).
Only boto3 and this package are imported.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import boto3
from botocore.config import Config

from enqueue_lambda.handler import EnqueueConfig, Enqueuer, build
from enqueue_lambda.jsonlog import emit, get_logger
from transcoder.domain.job import RAW_PREFIX

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_sqs import SQSClient

log = get_logger("enqueue_lambda.relay")
UPLOADS_QUEUE = "transcoder-uploads"
NOTIFICATION_ID = "raw-uploads-to-relay"
DEFAULTS = {
    "TRANSCODER_BUCKET": "transcoder-media",
    "TRANSCODER_QUEUE": "transcoder-jobs",
    "TRANSCODER_TABLE": "transcoder-jobs",
}
UPLOADS_VISIBILITY_S = 60


@dataclass(frozen=True, slots=True)
class Clients:
    s3: S3Client
    sqs: SQSClient


def clients(env: Mapping[str, str]) -> Clients:
    endpoint = env.get("AWS_ENDPOINT_URL") or None
    region = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or "us-east-1"
    # Path-style S3 addressing: ``bucket.localstack`` does not resolve inside the compose network.
    config = Config(
        region_name=region,
        retries={"mode": "standard", "max_attempts": 5},
        s3={"addressing_style": "path"} if endpoint else {},
    )
    return Clients(
        s3=boto3.client("s3", endpoint_url=endpoint, config=config),
        sqs=boto3.client("sqs", endpoint_url=endpoint, config=config),
    )


def queue_url(sqs: SQSClient, name_or_url: str) -> str:
    if name_or_url.startswith(("http://", "https://")):
        return name_or_url
    return sqs.get_queue_url(QueueName=name_or_url)["QueueUrl"]


def wire(s3: S3Client, sqs: SQSClient, bucket: str, uploads_queue: str = UPLOADS_QUEUE) -> str:
    """Create the uploads queue and point the bucket's ``raw/`` created and removed events at it."""
    url = sqs.create_queue(
        QueueName=uploads_queue,
        Attributes={
            "VisibilityTimeout": str(UPLOADS_VISIBILITY_S),
            "MessageRetentionPeriod": str(4 * 24 * 3600),
        },
    )["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Service": "s3.amazonaws.com"},
                "Action": "sqs:SendMessage",
                "Resource": arn,
                "Condition": {"ArnEquals": {"aws:SourceArn": f"arn:aws:s3:::{bucket}"}},
            }
        ],
    }
    sqs.set_queue_attributes(QueueUrl=url, Attributes={"Policy": json.dumps(policy)})
    s3.put_bucket_notification_configuration(
        Bucket=bucket,
        NotificationConfiguration={
            "QueueConfigurations": [
                {
                    "Id": NOTIFICATION_ID,
                    "QueueArn": arn,
                    "Events": ["s3:ObjectCreated:*", "s3:ObjectRemoved:*"],
                    "Filter": {"Key": {"FilterRules": [{"Name": "prefix", "Value": RAW_PREFIX}]}},
                }
            ]
        },
    )
    emit(log, logging.INFO, "relay.wired", bucket=bucket, prefix=RAW_PREFIX, queue=url)
    return url


class Relay:
    """Long-polls the uploads queue and hands each S3 event to the enqueue handler."""

    def __init__(
        self, sqs: SQSClient, uploads_url: str, enqueuer: Enqueuer, *, wait_time_s: int = 10
    ) -> None:
        self._sqs = sqs
        self._url = uploads_url
        self._enqueuer = enqueuer
        self._wait_time_s = wait_time_s

    def poll(self) -> int:
        """One receive; returns how many notifications were handed over and deleted."""
        messages = self._sqs.receive_message(
            QueueUrl=self._url, MaxNumberOfMessages=10, WaitTimeSeconds=self._wait_time_s
        ).get("Messages", [])
        return sum(self._relay(message) for message in messages)

    def _relay(self, message: Mapping[str, Any]) -> bool:
        message_id = str(message.get("MessageId", ""))
        try:
            event = json.loads(str(message.get("Body", "")))
        except json.JSONDecodeError:
            # Not an S3 event: nothing will ever make it one. Drop it, loudly.
            emit(log, logging.ERROR, "relay.unreadable", message_id=message_id)
            self._delete(message)
            return False
        try:
            report = self._enqueuer.handle(event, trace_id=message_id or None)
        except Exception as exc:
            # Left in the queue: it is delivered again after the visibility timeout.
            emit(log, logging.WARNING, "relay.retry_later", message_id=message_id, error=str(exc))
            return False
        emit(log, logging.INFO, "relay.handled", message_id=message_id, **report.as_dict())
        self._delete(message)
        return True

    def _delete(self, message: Mapping[str, Any]) -> None:
        self._sqs.delete_message(QueueUrl=self._url, ReceiptHandle=str(message["ReceiptHandle"]))

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                self.poll()
            except Exception as exc:  # LocalStack restarting: wait, then poll again.
                emit(log, logging.WARNING, "relay.poll_failed", error=str(exc))
                stop.wait(5)


def enqueuer_from_env(env: Mapping[str, str], sqs: SQSClient) -> Enqueuer:
    """The enqueue handler configured from the worker's variables (queue name -> URL)."""
    merged = {**DEFAULTS, **env}
    merged["TRANSCODER_QUEUE_URL"] = queue_url(sqs, merged["TRANSCODER_QUEUE"])
    return build(
        EnqueueConfig.from_env(merged),
        endpoint_url=env.get("AWS_ENDPOINT_URL") or None,
        region=env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION"),
    )


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m enqueue_lambda.relay", description=__doc__)
    parser.add_argument("command", choices=("wire", "run"))
    parser.add_argument("--uploads-queue", default=UPLOADS_QUEUE, help="name of the uploads queue")
    parser.add_argument("--once", action="store_true", help="run: poll once, then exit")
    parser.add_argument("--wait", type=int, default=10, help="run: long-poll seconds (0-20)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    env = dict(os.environ if env is None else env)
    aws = clients(env)
    if args.command == "wire":
        bucket = env.get("TRANSCODER_BUCKET") or DEFAULTS["TRANSCODER_BUCKET"]
        print(json.dumps({"uploads_queue": wire(aws.s3, aws.sqs, bucket, args.uploads_queue)}))
        return 0
    relay = Relay(
        aws.sqs,
        queue_url(aws.sqs, args.uploads_queue),
        enqueuer_from_env(env, aws.sqs),
        wait_time_s=args.wait,
    )
    if args.once:
        relay.poll()
        return 0
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    emit(log, logging.INFO, "relay.started", uploads_queue=args.uploads_queue)
    relay.run(stop)
    return 0


if __name__ == "__main__":
    sys.exit(main())
