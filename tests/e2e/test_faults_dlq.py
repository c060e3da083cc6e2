"""Fault scenario 8: messages that can never succeed reach the DLQ, and nothing loops.

* a poison message (not a job) goes to the DLQ on its first receive, with the reason attached;
* a job whose encoder is killed every time (an out-of-memory kill, simulated by an ``ffmpeg`` on
  the worker's PATH that SIGKILLs itself) is retried with backoff, marked
  ``FAILED``/``retries_exhausted`` on its last allowed receive, and moved to the DLQ by SQS;
* a job that kills its whole worker every time (a "job of death": the worker never gets to
  settle) burns one receive per crash and reaches the DLQ with its record still ``PROCESSING``;
  the dead-letter handler then marks it ``FAILED``.
"""

from __future__ import annotations

import asyncio
import os
import stat
from pathlib import Path

import pytest
from faults.clips import clip
from faults.harness import Fleet

from transcoder.aws.clients import Clients
from transcoder.config import Settings
from transcoder.domain.record import record_key

pytestmark = pytest.mark.slow


def oom_ffmpeg(tmp_path: Path) -> dict[str, str]:
    """A PATH whose ``ffmpeg`` is killed by SIGKILL as soon as it starts (ffprobe stays real)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "ffmpeg"
    fake.write_text("#!/bin/sh\n# killed like the kernel's OOM killer would\nkill -9 $$\n")
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return {"PATH": f"{bin_dir}:{os.environ['PATH']}"}


async def test_poison_messages_go_to_the_dlq_at_once(
    settings: Settings, clients: Clients, tmp_path: Path
) -> None:
    async with Fleet.open(settings, clients, tmp_path) as fleet:
        worker = fleet.start("worker")
        await fleet.queue.send("this is not a job")
        await fleet.queue.send('{"user_id": "u1", "video_id": "v1", "surprise": true}')
        await fleet.wait_until("both dead-lettered", fleet.dlq_holds(2), 30)
        await fleet.wait_until("jobs queue drained", fleet.drained, 10)
        letters = await fleet.dead_letters()
        reasons = {m["MessageAttributes"]["transcoder_reason"]["StringValue"] for m in letters}
        assert reasons == {"invalid_message"}
        assert worker.outcomes() == ["poison", "poison"]
        await asyncio.sleep(1.5)  # the letters are visible in the DLQ again
        result = await fleet.run_dlq_handler()
        assert result["batchItemFailures"] == []
        item = await clients.dynamodb.get_item(
            TableName=fleet.settings.table, Key=record_key("u1", "v1"), ConsistentRead=True
        )
        assert item["Item"]["status"]["S"] == "FAILED"
        assert item["Item"]["error"]["M"]["code"]["S"] == "invalid_message"
        assert worker.outcomes() == ["poison", "poison"]  # no loop


async def test_always_failing_retryable_job_is_exhausted_then_dead_lettered(
    settings: Settings, clients: Clients, tmp_path: Path
) -> None:
    async with Fleet.open(settings, clients, tmp_path) as fleet:
        (job,) = await fleet.submit(clip(2))
        worker = fleet.start("worker", extra_env=oom_ffmpeg(tmp_path))
        record = await fleet.wait_for_status(job, "FAILED", timeout_s=60)
        assert record["error"]["code"] == "retries_exhausted"
        assert "ffmpeg_killed" in record["error"]["message"]
        assert record["attempts"] == 3
        await fleet.wait_until("moved to the DLQ", fleet.dlq_holds(1), 30)
        await fleet.wait_until("jobs queue drained", fleet.drained, 10)
        outcomes = worker.outcomes(record["job_id"])
        assert outcomes == ["retry", "retry", "exhausted"]
        delays = [e["visible_in_s"] for e in worker.events("job.settled", outcome="retry")]
        assert all(1 <= d <= fleet.settings.retry_max_s for d in delays)
        result = await fleet.run_dlq_handler()
        assert result["batchItemFailures"] == []
        assert await fleet.record(job) == record  # already final: the handler changes nothing
        await asyncio.sleep(2)
        assert worker.outcomes(record["job_id"]) == outcomes  # no loop


async def test_a_job_that_kills_its_worker_every_time_ends_in_the_dlq_and_failed(
    settings: Settings, clients: Clients, tmp_path: Path
) -> None:
    async with Fleet.open(settings, clients, tmp_path, visibility_timeout_s=5) as fleet:
        (job,) = await fleet.submit(clip(12))
        for crash in range(1, fleet.settings.max_receive_count + 1):
            worker = fleet.start(f"crash{crash}")
            await worker.wait_for("ffmpeg.started", timeout_s=60)
            worker.kill()
            await worker.wait_exit(5)
        survivor = fleet.start("survivor")
        await fleet.wait_until("moved to the DLQ", fleet.dlq_holds(1), 30)
        record = await fleet.record(job)
        assert record["status"] == "PROCESSING"  # nobody lived to settle it
        assert record["attempts"] == fleet.settings.max_receive_count
        result = await fleet.run_dlq_handler()
        assert result["batchItemFailures"] == []
        record = await fleet.record(job)
        assert record["status"] == "FAILED"
        assert record["error"]["code"] == "retries_exhausted"
        assert survivor.outcomes() == []
        assert await fleet.drained()
