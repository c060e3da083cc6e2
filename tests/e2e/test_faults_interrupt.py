"""Fault scenarios 1-3: a worker killed or stopped in the middle of a job.

Real worker processes, real ffmpeg, the emulator (see tests/faults/harness.py). The job is a 12 s
1280x720 clip encoded with one x264 thread, so there is time to interrupt it.
"""

from __future__ import annotations

import time
from pathlib import Path

import psutil
import pytest
from faults.clips import clip
from faults.harness import Fleet

from transcoder.aws.clients import Clients
from transcoder.config import Settings

pytestmark = pytest.mark.slow


def gone(processes: list[psutil.Process]) -> bool:
    return not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in processes)


async def test_sigkill_mid_encode_is_redelivered_and_completed_once(
    settings: Settings, clients: Clients, tmp_path: Path
) -> None:
    """1. SIGKILL mid-encode: the message reappears after its visibility timeout and a second
    worker completes it. One COMPLETED, one set of outputs, attempts = 2."""
    async with Fleet.open(settings, clients, tmp_path) as fleet:
        (job,) = await fleet.submit(clip(12))
        first = fleet.start("first")
        await first.wait_for("ffmpeg.started")
        await fleet.wait_for_progress(job, 5)
        second = fleet.start("second")
        first.kill()
        assert await first.wait_exit(5) == -9
        record = await fleet.wait_for_status(job, "COMPLETED", timeout_s=120)
        assert record["attempts"] == 2
        assert second.outcomes(record["job_id"]) == ["completed"]
        assert "lease_owner" not in record
        assert list(await fleet.outputs(job)) == [
            f"transcoded/720p/{job.user_id}/{job.video_id}.mp4"
        ]
        await fleet.wait_until("jobs queue drained", fleet.drained, 10)
        assert (await fleet.dlq_depth()).visible == 0


async def test_sigterm_with_much_work_left_hands_the_job_back_at_once(
    settings: Settings, clients: Clients, tmp_path: Path
) -> None:
    """2. SIGTERM early in a long job: ffmpeg killed, job back to QUEUED, message visible again
    within seconds (the visibility timeout here is 30 s), the worker exits inside its grace
    period, and another worker completes the job."""
    async with Fleet.open(
        settings, clients, tmp_path, visibility_timeout_s=30, shutdown_grace_s=5.0
    ) as fleet:
        (job,) = await fleet.submit(clip(12))
        first = fleet.start("first")
        await first.wait_for("ffmpeg.started")
        await fleet.wait_for_progress(job, 5)
        encoders = first.ffmpeg()
        assert encoders
        second = fleet.start("second")
        await second.wait_for("worker.started")
        signalled = time.monotonic()
        first.terminate()
        assert await first.wait_exit(fleet.settings.shutdown_grace_s + 5) == 0
        exit_s = time.monotonic() - signalled
        assert exit_s < fleet.settings.shutdown_grace_s
        assert gone(encoders)
        job_id = first.events("job.claimed")[0]["job_id"]
        assert first.outcomes(job_id) == ["handed_back"]
        await second.wait_for("job.claimed", timeout_s=10)
        taken_s = time.monotonic() - signalled
        assert taken_s < 10  # visibility 0 on hand-back, not the 30 s timeout
        record = await fleet.wait_for_status(job, "COMPLETED", timeout_s=120)
        assert record["attempts"] == 2
        assert second.outcomes(job_id) == ["completed"]
        await fleet.wait_until("jobs queue drained", fleet.drained, 10)
        print(f"scenario 2: exit {exit_s:.1f} s after SIGTERM, re-claimed after {taken_s:.1f} s")


async def test_sigterm_near_the_end_finishes_the_job_then_exits(
    settings: Settings, clients: Clients, tmp_path: Path
) -> None:
    """3. SIGTERM near the end of a job: the job completes, then the worker exits 0."""
    async with Fleet.open(settings, clients, tmp_path, shutdown_grace_s=40.0) as fleet:
        (job,) = await fleet.submit(clip(12))
        worker = fleet.start("worker")
        await worker.wait_for("ffmpeg.started")
        await fleet.wait_for_progress(job, 50)
        signalled = time.monotonic()
        worker.terminate()
        assert await worker.wait_exit(45) == 0
        exit_s = time.monotonic() - signalled
        record = await fleet.record(job)
        assert record["status"] == "COMPLETED"
        assert record["attempts"] == 1
        assert worker.outcomes(record["job_id"]) == ["completed"]
        assert worker.events("worker.signal")
        assert not worker.events("job.interrupting")
        await fleet.wait_until("jobs queue drained", fleet.drained, 5)
        print(f"scenario 3: completed and exited {exit_s:.1f} s after SIGTERM")
