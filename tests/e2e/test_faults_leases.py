"""Fault scenarios 5 and 6: the lease changes hands while a worker holds, or held, the job.

The DynamoDB record is the fence (``lease_owner`` + ``attempts``): a worker that lost it kills
ffmpeg and writes nothing, not even to S3, and never deletes the message.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from faults.clips import clip
from faults.harness import Fleet

from transcoder.aws.clients import Clients
from transcoder.config import Settings

pytestmark = pytest.mark.slow
TAKE_OVER = (
    "SET attempts = attempts + :one, lease_owner = :owner, lease_expires_at = :until, "
    "rev = rev + :one"
)


async def test_lease_taken_over_mid_job_kills_ffmpeg_and_writes_nothing(
    settings: Settings, clients: Clients, tmp_path: Path
) -> None:
    """5a. Another attempt takes the lease while the job runs: the next renewal fails its
    condition, ffmpeg is killed, the record stays the new owner's, no output, no delete."""
    async with Fleet.open(settings, clients, tmp_path) as fleet:
        (job,) = await fleet.submit(clip(12))
        worker = fleet.start("loser")
        started = await worker.wait_for("ffmpeg.started")
        await fleet.wait_for_progress(job, 5)
        encoders = worker.ffmpeg()
        await fleet.rewrite_record(job, TAKE_OVER, one=1, owner="usurper", until=time.time() + 600)
        taken = await fleet.record(job)
        await worker.wait_for("job.settled", outcome="lease_lost", timeout_s=10)
        assert not any(p.is_running() for p in encoders if p.pid == started["pid"])
        record = await fleet.record(job)
        assert record["lease_owner"] == "usurper"
        assert (record["status"], record["attempts"]) == ("PROCESSING", 2)
        assert record["rev"] == taken["rev"]  # the loser wrote nothing after the takeover
        assert await fleet.outputs(job) == {}
        assert (await fleet.depth()).in_flight == 1  # not deleted, not made visible
        assert worker.alive


async def test_receipt_handle_invalidated_mid_job_kills_ffmpeg_and_writes_nothing(
    settings: Settings, clients: Clients, tmp_path: Path
) -> None:
    """5b. The receipt handle stops working (here: the queue is purged under the worker): the
    next visibility extension is refused, ffmpeg is killed, nothing is written."""
    async with Fleet.open(settings, clients, tmp_path) as fleet:
        (job,) = await fleet.submit(clip(12))
        worker = fleet.start("loser")
        await worker.wait_for("ffmpeg.started")
        await fleet.wait_for_progress(job, 5)
        before = await fleet.record(job)
        await clients.sqs.purge_queue(QueueUrl=fleet.resources.queue_url)
        await worker.wait_for("job.settled", outcome="lease_lost", timeout_s=15)
        assert not worker.ffmpeg()
        record = await fleet.record(job)
        assert record["status"] == "PROCESSING"  # not COMPLETED, not released
        assert record["attempts"] == before["attempts"]
        assert await fleet.outputs(job) == {}


async def test_dead_holder_with_lapsed_lease_is_taken_over(
    settings: Settings, clients: Clients, tmp_path: Path
) -> None:
    """6a. The record says PROCESSING, but its holder died and the lease lapsed: the next
    receiver claims attempt 2 and completes."""
    async with Fleet.open(settings, clients, tmp_path) as fleet:
        (job,) = await fleet.submit(clip(2))
        await fleet.rewrite_record(
            job,
            "SET #status = :processing, lease_owner = :ghost, attempts = :one, "
            "lease_expires_at = :past, rev = :one",
            processing="PROCESSING",
            ghost="ghost",
            one=1,
            past=time.time() - 5,
        )
        worker = fleet.start("taker")
        record = await fleet.wait_for_status(job, "COMPLETED", timeout_s=60)
        assert record["attempts"] == 2
        assert worker.outcomes(record["job_id"]) == ["completed"]
        await fleet.wait_until("jobs queue drained", fleet.drained, 10)


async def test_paused_holder_resumes_after_takeover_and_writes_nothing(
    settings: Settings, clients: Clients, tmp_path: Path
) -> None:
    """6b. The holder freezes (SIGSTOP: a long GC pause, a stalled host), its lease lapses, a
    second worker completes the job; the holder then resumes, sees that its lease ran out, kills
    ffmpeg and overwrites nothing: not the record, not the outputs."""
    async with Fleet.open(settings, clients, tmp_path) as fleet:
        (job,) = await fleet.submit(clip(12))
        paused = fleet.start("paused")
        await paused.wait_for("ffmpeg.started")
        await fleet.wait_for_progress(job, 5)
        paused.freeze()
        taker = fleet.start("taker")
        record = await fleet.wait_for_status(job, "COMPLETED", timeout_s=120)
        outputs = await fleet.outputs(job)
        assert record["attempts"] == 2
        paused.thaw()
        await paused.wait_for("job.settled", outcome="lease_lost", timeout_s=15)
        assert await fleet.record(job) == record
        assert await fleet.outputs(job) == outputs
        assert taker.outcomes(record["job_id"]) == ["completed"]
        await fleet.wait_until("jobs queue drained", fleet.drained, 10)
