"""Operator commands against the emulator: status lists, dlq list/redrive, retry."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import pytest
from support.operator import BUCKET, Aws, dlq_depth, run

from enqueue_lambda.handler import EnqueueConfig, Enqueuer, s3_event_for
from transcoder.config import Settings
from transcoder.domain.job import isoformat, utcnow
from transcoder.ops import commands as ops
from transcoder.ops.bootstrap import Resources

if TYPE_CHECKING:
    from mypy_boto3_sqs.type_defs import MessageAttributeValueTypeDef


def uploads(*keys: str) -> dict[str, Any]:
    """The S3 event for fresh uploads of ``keys`` (the production builder the demo uses)."""
    records: list[dict[str, Any]] = []
    for key in keys:
        head = {"ContentLength": 1000, "ETag": f'"{uuid.uuid4().hex}"'}
        records += s3_event_for(BUCKET, key, head, "us-east-1")["Records"]
    return {"Records": records}


@pytest.fixture
def aws(settings: Settings, resources: Resources) -> Aws:
    return Aws(settings, resources)


@pytest.fixture
def enqueuer(settings: Settings, aws: Aws) -> Enqueuer:
    config = EnqueueConfig(table=settings.table, queue_url=aws.queue_url)
    return Enqueuer(config, aws.dynamodb, aws.sqs)


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
