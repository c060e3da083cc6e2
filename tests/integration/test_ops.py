"""Operator commands against the emulator: status lists, dlq list/redrive, retry; and end to end,
a dead-lettered job redriven and completed by a real worker with real ffmpeg."""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3
import pytest
from botocore.config import Config

from enqueue_lambda.dlq import DeadLetterHandler
from enqueue_lambda.handler import EnqueueConfig, Enqueuer, s3_event_for
from transcoder.aws.clients import Clients
from transcoder.config import Settings
from transcoder.domain.job import from_item, isoformat, record_key, to_attr, utcnow
from transcoder.ops import commands as ops
from transcoder.ops.bootstrap import Resources
from transcoder.ops.demo import submit
from transcoder.runtime import app

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_sqs import SQSClient
    from mypy_boto3_sqs.type_defs import MessageAttributeValueTypeDef

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
        return from_item(item["Item"]) if "Item" in item else {}

    def set(self, user: str, video: str, **values: Any) -> None:
        self.dynamodb.update_item(
            TableName=self.table,
            Key=record_key(user, video),
            UpdateExpression="SET " + ", ".join(f"#{k} = :{k}" for k in values),
            ExpressionAttributeNames={f"#{k}": k for k in values},
            ExpressionAttributeValues={f":{k}": to_attr(v) for k, v in values.items()},
        )

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


def uploads(*keys: str) -> dict[str, Any]:
    """The S3 event for fresh uploads of ``keys`` (the production builder the demo uses)."""
    records: list[dict[str, Any]] = []
    for key in keys:
        head = {"ContentLength": 1000, "ETag": f'"{uuid.uuid4().hex}"'}
        records += s3_event_for(BUCKET, key, head, "us-east-1")["Records"]
    return {"Records": records}


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


@pytest.fixture
def aws(settings: Settings, resources: Resources) -> Aws:
    return Aws(settings, resources)


@pytest.fixture
def enqueuer(settings: Settings, aws: Aws) -> Enqueuer:
    config = EnqueueConfig(table=settings.table, queue_url=aws.queue_url)
    return Enqueuer(config, aws.dynamodb, aws.sqs)


def dlq_depth(aws: Aws, dlq_url: str) -> int:
    """Messages in the DLQ, visible or held."""
    attributes = aws.sqs.get_queue_attributes(
        QueueUrl=dlq_url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return sum(int(v) for v in attributes.values())


@pytest.mark.parametrize(
    ("text", "seconds"), [("90", 90.0), ("30m", 1800.0), ("1h30m", 5400.0), ("2d", 172800.0)]
)
def test_durations(text: str, seconds: float) -> None:
    assert ops.parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "30x", "m30", "1h 30m", "-5m"])
def test_bad_durations_are_usage_errors(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        ops.parse_duration(text)


def test_tables_align_and_ages_read_well() -> None:
    now = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    assert ops.age("2026-01-01T11:55:48.000Z", now) == "4m12s"
    assert ops.age("2025-12-30T08:00:00.000Z", now) == "2d04h"
    assert ops.age("garbage", now) == "?"
    text = ops.table(("video", "status"), [{"video": "v1", "status": "FAILED"}, {"video": "v22"}])
    assert text.splitlines() == ["VIDEO  STATUS", "v1     FAILED", "v22    -"]


async def test_status_lists_jobs_in_a_state_oldest_first(
    settings: Settings, aws: Aws, enqueuer: Enqueuer, capsys: pytest.CaptureFixture[str]
) -> None:
    enqueuer.handle(uploads(*[f"raw/u1/{v}.mp4" for v in "abc"]))
    stalled = {"code": "stalled", "message": "no frame for 120 s", "retryable": True}
    two_hours_ago = isoformat(utcnow() - timedelta(hours=2))
    aws.set("u1", "a", status="FAILED", error=stalled, updated_at=isoformat(utcnow()))
    aws.set("u1", "b", status="FAILED", error=stalled, updated_at=two_hours_ago)
    code, out, _ = await run(settings, capsys, "status", "--status", "FAILED")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == [c.upper() for c in ops.JOB_COLUMNS]
    assert [line.split()[4] for line in lines[1:3]] == ["b", "a"]  # oldest first
    assert "stalled: no frame for 120 s" in lines[1]
    assert lines[-1] == "2 job(s) FAILED"
    code, out, _ = await run(
        settings, capsys, "status", "--status", "FAILED", "--older-than", "30m"
    )
    assert [line.split()[4] for line in out.splitlines()[1:-1]] == ["b"]
    assert out.splitlines()[-1].startswith("1 job(s) FAILED, not updated since ")
    code, out, _ = await run(
        settings, capsys, "status", "--status", "FAILED", "--older-than", "30m", "--json"
    )
    (old,) = json.loads(out)
    assert (old["video_id"], old["updated_at"], "message" in old) == ("b", two_hours_ago, False)
    code, out, _ = await run(settings, capsys, "status", "--status", "QUEUED", "--json")
    assert [r["video_id"] for r in json.loads(out)] == ["c"]


async def test_status_of_one_job_and_usage_errors(
    settings: Settings, enqueuer: Enqueuer, capsys: pytest.CaptureFixture[str]
) -> None:
    enqueuer.handle(uploads("raw/u1/v1.mp4"))
    code, out, _ = await run(settings, capsys, "status", "v1", "--user", "u1", "--json")
    assert (code, json.loads(out)["status"]) == (0, "QUEUED")
    code, _, err = await run(settings, capsys, "status")
    assert code == 2 and "VIDEO_ID" in err
    code, _, err = await run(settings, capsys, "status", "nope", "--user", "u1")
    assert code == 1 and "no job" in err


async def test_dlq_list_shows_each_message_with_its_job_and_leaves_it_there(
    settings: Settings,
    aws: Aws,
    enqueuer: Enqueuer,
    resources: Resources,
    capsys: pytest.CaptureFixture[str],
) -> None:
    enqueuer.handle(uploads("raw/u1/a.mp4", "raw/u1/b.mp4"))
    aws.dead_letter_and_mark()
    poison: dict[str, MessageAttributeValueTypeDef] = {
        "transcoder_reason": {"DataType": "String", "StringValue": "invalid_message"}
    }
    aws.sqs.send_message(QueueUrl=resources.dlq_url, MessageBody="{}", MessageAttributes=poison)
    code, out, _ = await run(settings, capsys, "dlq", "list")
    assert code == 0
    assert out.splitlines()[0].split() == [c.upper() for c in ops.LETTER_COLUMNS]
    assert out.splitlines()[-1] == "3 message(s) in the dead-letter queue"
    code, out, _ = await run(settings, capsys, "dlq", "list", "--json")
    rows = {row["video"]: row for row in json.loads(out)}
    assert rows["a"]["record"] == "FAILED retries_exhausted"
    assert rows["a"]["reason"] == "receives exhausted"
    assert rows[None]["reason"] == "invalid_message"
    assert dlq_depth(aws, resources.dlq_url) == 3
    assert aws.sqs.receive_message(QueueUrl=resources.dlq_url, MaxNumberOfMessages=10).get(
        "Messages"
    ), "listing must leave the messages visible"


async def test_redrive_one_job_puts_back_exactly_its_message(
    settings: Settings,
    aws: Aws,
    enqueuer: Enqueuer,
    resources: Resources,
    capsys: pytest.CaptureFixture[str],
) -> None:
    report = enqueuer.handle(uploads("raw/u1/a.mp4", "raw/u1/b.mp4"))
    stored = aws.record("u1", "a")["message"]
    aws.dead_letter_and_mark()
    job_a = aws.record("u1", "a")["job_id"]
    assert job_a in report.queued
    code, out, _ = await run(settings, capsys, "dlq", "redrive", "--job", job_a, "--json")
    assert code == 0
    result = json.loads(out)
    assert result["mode"] == "resend"
    (row,) = result["redriven"]
    assert (row["job"], row["record"], row["ok"]) == (job_a, "QUEUED", True)
    assert aws.record("u1", "a")["status"] == "QUEUED"
    assert aws.record("u1", "b")["status"] == "FAILED"
    (message,) = aws.sqs.receive_message(QueueUrl=aws.queue_url, MaxNumberOfMessages=10)["Messages"]
    assert message["Body"] == stored  # byte for byte
    assert dlq_depth(aws, resources.dlq_url) == 1
    code, _, err = await run(settings, capsys, "dlq", "redrive", "--job", "0" * 32)
    assert code == 1 and "no message for job" in err


async def test_redrive_all_without_a_move_task_receives_and_resends(
    settings: Settings,
    aws: Aws,
    enqueuer: Enqueuer,
    resources: Resources,
    capsys: pytest.CaptureFixture[str],
) -> None:
    enqueuer.handle(uploads(*[f"raw/u1/{v}.mp4" for v in "abc"]))
    aws.dead_letter_and_mark()
    code, out, err = await run(settings, capsys, "dlq", "redrive", "--all")
    assert code == 0, err
    assert "message-move task unavailable" in err  # moto 5.2 lacks StartMessageMoveTask
    assert out.splitlines()[-1] == "3 of 3 message(s) redriven"
    assert dlq_depth(aws, resources.dlq_url) == 0
    assert {m["video_id"] for m in aws.messages()} == set("abc")
    assert all(aws.record("u1", v)["status"] == "QUEUED" for v in "abc")


async def test_retry_sends_a_retryable_failure_again_and_refuses_the_rest(
    settings: Settings,
    aws: Aws,
    enqueuer: Enqueuer,
    resources: Resources,
    capsys: pytest.CaptureFixture[str],
) -> None:
    enqueuer.handle(uploads(*[f"raw/u1/{v}.mp4" for v in "abc"]))
    stored = aws.record("u1", "a")["message"]
    aws.messages()  # the original messages are gone (say, deleted by the DLQ Lambda)
    exhausted = {"code": "retries_exhausted", "message": "last: stalled", "retryable": True}
    aws.set("u1", "a", status="FAILED", error=exhausted, failed_at=isoformat(utcnow()))
    gone = {"code": "not_a_video", "message": "invalid data", "retryable": False}
    aws.set("u1", "b", status="FAILED", error=gone)
    code, out, _ = await run(settings, capsys, "retry", "a", "--user", "u1", "--json")
    assert code == 0
    assert json.loads(out)["record"] == "QUEUED"
    record = aws.record("u1", "a")
    assert (record["status"], "failed_at" in record) == ("QUEUED", False)
    bodies = aws.sqs.receive_message(QueueUrl=aws.queue_url, MaxNumberOfMessages=10)["Messages"]
    assert [m["Body"] for m in bodies] == [stored]
    code, _, err = await run(settings, capsys, "retry", "b", "--user", "u1")
    assert code == 1 and "failed permanently (not_a_video)" in err
    code, _, err = await run(settings, capsys, "retry", "c", "--user", "u1")
    assert code == 1 and "only FAILED jobs" in err


def short_clip(source: Path, target: Path, seconds: float = 2.0) -> Path:
    """The first seconds of a sample, stream-copied (no encode), to keep the CPU for the worker."""
    command = ["ffmpeg", "-v", "error", "-y", "-i", str(source), "-t", str(seconds)]
    subprocess.run([*command, "-c", "copy", str(target)], check=True, timeout=60)
    return target


async def wait_for_status(
    services: app.Services, user: str, video: str, want: str, timeout_s: float
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    record: dict[str, Any] | None = None
    while time.monotonic() < deadline:
        record = await services.store.get(user, video)
        if record and record.get("status") == want:
            return record
        await asyncio.sleep(0.25)
    raise AssertionError(
        f"{video} is {record and record.get('status')}, not {want}, after {timeout_s} s"
    )


@pytest.mark.e2e
async def test_a_dead_lettered_job_is_redriven_and_completed_by_a_worker(
    settings: Settings,
    clients: Clients,
    aws: Aws,
    resources: Resources,
    samples: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    clip = short_clip(samples["bikes"], tmp_path / "bikes.mp4")
    (job,) = await submit(clients, settings, [clip], user_id="ops")  # through the real handler
    aws.dead_letter_and_mark()
    services = await app.connect(clients, settings)
    failed = await services.store.get(job.user_id, job.video_id)
    assert failed is not None and failed["error"]["code"] == "retries_exhausted"

    code, out, err = await run(settings, capsys, "dlq", "redrive", "--job", failed["job_id"])
    assert code == 0, err
    assert out.splitlines()[-1] == "1 of 1 message(s) redriven"
    assert (await services.store.get(job.user_id, job.video_id) or {})["status"] == "QUEUED"

    worker = await app.build_worker(settings, services)
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    try:
        record = await wait_for_status(services, job.user_id, job.video_id, "COMPLETED", 240)
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=60)
    assert record["job_id"] == failed["job_id"]
    rendition = record["renditions"]["720p"]
    assert (rendition["status"], rendition["width"], rendition["height"]) == ("COMPLETED", 640, 272)
    head = await clients.s3.head_object(Bucket=settings.bucket, Key=rendition["key"])
    assert head["ContentLength"] == rendition["bytes"]
    assert dlq_depth(aws, resources.dlq_url) == 0
