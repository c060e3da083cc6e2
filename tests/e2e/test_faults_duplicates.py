"""Fault scenarios 4 and 7: the same job delivered twice.

A duplicate arrives while the first holder still works (SQS delivers at least once; the enqueue
path or a redrive may send twice), or after the job completed because the delete was lost.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from faults.clips import clip
from faults.harness import Fleet

from transcoder.aws.clients import Clients
from transcoder.config import Settings

pytestmark = pytest.mark.slow


async def test_duplicate_while_the_holder_is_alive_backs_off(
    settings: Settings, clients: Clients, tmp_path: Path
) -> None:
    """4. The second receiver sees a live lease: no ffmpeg, no delete, the copy comes back
    later and is acknowledged as a duplicate once the holder completed."""
    async with Fleet.open(settings, clients, tmp_path) as fleet:
        (job,) = await fleet.submit(clip(12))
        holder = fleet.start("holder")
        claimed = await holder.wait_for("job.claimed")
        job_id = claimed["job_id"]
        second = fleet.start("second")
        await second.wait_for("worker.started")
        await fleet.resend(job)
        await second.wait_for("job.settled", outcome="held", timeout_s=20)
        assert not second.events("job.claimed")
        assert not second.events("ffmpeg.started")
        assert (await fleet.depth()).in_flight == 2  # the holder's message and the held copy
        record = await fleet.wait_for_status(job, "COMPLETED", timeout_s=120)
        assert record["attempts"] == 1
        await fleet.wait_until("the copy acknowledged", fleet.drained, 60)
        outcomes = fleet.outcomes(job_id)
        assert outcomes.count("completed") == 1
        assert outcomes.count("duplicate") == 1
        assert set(outcomes) == {"completed", "held", "duplicate"}
        assert fleet.started_ffmpeg(job_id) == 1
        assert (await fleet.dlq_depth()).visible == 0


async def test_redelivery_of_a_completed_job_is_acknowledged_without_work(
    settings: Settings, clients: Clients, tmp_path: Path
) -> None:
    """7. The job completed but its delete was lost: the redelivery is deleted, nothing is
    re-encoded or rewritten."""
    async with Fleet.open(settings, clients, tmp_path) as fleet:
        (job,) = await fleet.submit(clip(2))
        worker = fleet.start("worker")
        record = await fleet.wait_for_status(job, "COMPLETED", timeout_s=60)
        outputs = await fleet.outputs(job)
        await fleet.resend(job)
        await worker.wait_for("job.settled", outcome="duplicate", timeout_s=20)
        await fleet.wait_until("jobs queue drained", fleet.drained, 10)
        assert await fleet.record(job) == record
        assert await fleet.outputs(job) == outputs
        assert worker.outcomes(record["job_id"]) == ["completed", "duplicate"]
        assert fleet.started_ffmpeg(record["job_id"]) == 1
