"""Fault scenarios 10-12: a frozen encoder, the 12-hour cap, and slots.

10. ffmpeg frozen (SIGSTOP): no frame for the stall timeout -> killed, retried, completed.
11. The cap on a job's duration (configured small here; 11.5 h in production, below SQS's 12-hour
    cap on a message's invisibility) -> an explicit permanent failure before the cap.
12. Two slots, four jobs (one of them not a video) -> never more than two ffmpeg processes at
    once, and each job settled on its own.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import psutil
import pytest
from faults.clips import clip
from faults.harness import Fleet, WorkerProcess

from transcoder.aws.clients import Clients
from transcoder.config import Settings

pytestmark = pytest.mark.slow


async def test_frozen_ffmpeg_is_detected_killed_and_retried(
    settings: Settings, clients: Clients, tmp_path: Path
) -> None:
    async with Fleet.open(settings, clients, tmp_path) as fleet:
        (job,) = await fleet.submit(clip(12))
        worker = fleet.start("worker")
        await worker.wait_for("ffmpeg.started")
        await fleet.wait_for_progress(job, 5)
        (encoder,) = worker.ffmpeg()
        encoder.suspend()
        frozen_at = time.monotonic()
        settled = await worker.wait_for("job.settled", outcome="retry", timeout_s=20)
        detected_s = time.monotonic() - frozen_at
        assert settled["code"] == "stalled"
        assert detected_s < fleet.settings.stall_timeout_s + 5
        assert not encoder.is_running() or encoder.status() == psutil.STATUS_ZOMBIE
        record = await fleet.wait_for_status(job, "COMPLETED", timeout_s=120)
        assert record["attempts"] == 2
        assert worker.outcomes(record["job_id"]) == ["retry", "completed"]
        await fleet.wait_until("jobs queue drained", fleet.drained, 10)
        print(f"scenario 10: stall detected {detected_s:.1f} s after SIGSTOP")


async def test_job_outliving_its_duration_cap_fails_explicitly(
    settings: Settings, clients: Clients, tmp_path: Path
) -> None:
    cap_s = 5.0
    async with Fleet.open(settings, clients, tmp_path, max_job_duration_s=cap_s) as fleet:
        (job,) = await fleet.submit(clip(30))
        worker = fleet.start("worker")
        claimed = await worker.wait_for("job.claimed")
        record = await fleet.wait_for_status(job, "FAILED", timeout_s=30)
        assert record["error"]["code"] == "processing_timeout"
        assert record["error"]["retryable"] is False
        assert record["attempts"] == 1
        assert worker.outcomes(record["job_id"]) == ["failed"]
        settled = worker.events("job.settled")[0]
        assert seconds_between(claimed, settled) < cap_s
        assert not worker.ffmpeg()
        assert await fleet.outputs(job) == {}
        await fleet.wait_until("jobs queue drained", fleet.drained, 10)
        assert (await fleet.dlq_depth()).visible == 0


async def test_two_slots_never_run_more_than_two_encoders(
    settings: Settings, clients: Clients, tmp_path: Path
) -> None:
    not_a_video = tmp_path / "notes.mp4"
    not_a_video.write_text("these are my holiday notes, not a video\n" * 50)
    async with Fleet.open(settings, clients, tmp_path, slots=2) as fleet:
        jobs = await fleet.submit(clip(4), clip(4), not_a_video, clip(4))
        worker = fleet.start("worker")
        counts: list[int] = []
        sampler = asyncio.create_task(sample_encoders(worker, counts))

        async def all_settled() -> bool:
            records = [await fleet.record(j) for j in jobs]
            return all(r.get("status") in ("COMPLETED", "FAILED") for r in records)

        await fleet.wait_until("all four settled", all_settled, 120)
        sampler.cancel()
        await asyncio.gather(sampler, return_exceptions=True)
        records = [await fleet.record(j) for j in jobs]
        assert [r["status"] for r in records] == ["COMPLETED", "COMPLETED", "FAILED", "COMPLETED"]
        assert records[2]["error"]["code"] == "not_a_video"
        assert all(r["attempts"] == 1 for r in records)
        assert max(counts) == 2
        assert sorted(worker.outcomes()) == ["completed"] * 3 + ["failed"]
        await fleet.wait_until("jobs queue drained", fleet.drained, 10)


async def sample_encoders(worker: WorkerProcess, counts: list[int]) -> None:
    """Count the worker's ffmpeg children every 50 ms until cancelled."""
    while True:
        counts.append(len(worker.ffmpeg()))
        await asyncio.sleep(0.05)


def seconds_between(first: dict[str, object], second: dict[str, object]) -> float:
    from datetime import datetime

    def at(entry: dict[str, object]) -> float:
        return datetime.fromisoformat(str(entry["timestamp"]).replace("Z", "+00:00")).timestamp()

    return at(second) - at(first)
