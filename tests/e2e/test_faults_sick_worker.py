"""A sick worker takes itself out, and a good job never pays for it (issue 13, item 2).

Real worker processes, real ffmpeg, the emulator. The sick worker's scratch is a small tmpfs that
something else has nearly filled: a real full disk, as a task whose ephemeral storage filled up
sees it. It passes the check before receiving (free space above its reserve), claims the job, and
finds after the probe that the job's renditions cannot fit. The job is on its last allowed receive
(``maxReceiveCount`` = 1 here), so before this behaviour the sick worker's ``scratch_full`` would
have dead-lettered it; now the job is handed back with its receive spared and a healthy worker
completes it, while the sick one reports why on ``/readyz`` and exits 3.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from faults.clips import clip
from faults.disk import nearly_full_tmpfs
from faults.harness import Fleet

from transcoder.aws.clients import Clients
from transcoder.config import Settings
from transcoder.runtime.worker import EXIT_UNFIT

pytestmark = pytest.mark.slow
KIB, MIB = 1024, 1024**2
UNFIT_EXIT_AFTER_S = 8


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 32 MiB tmpfs with 256 KiB left free, less than one rendition of the job (~1.5 MB)."""
    try:
        with nearly_full_tmpfs(tmp_path / "small-disk") as mount:
            yield mount
    except PermissionError as exc:
        pytest.skip(str(exc))


async def readyz(port: int) -> tuple[int, dict[str, object]]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}/readyz") as response,
    ):
        return response.status, await response.json()


async def test_a_worker_with_a_full_scratch_retires_and_the_job_completes_elsewhere(
    settings: Settings, clients: Clients, tmp_path: Path, small_disk: Path
) -> None:
    async with Fleet.open(settings, clients, tmp_path, max_receive_count=1) as fleet:
        (job,) = await fleet.submit(clip(4))
        sick = fleet.start(
            "sick",
            scratch_dir=small_disk / "scratch",
            extra_env={
                "TRANSCODER_SCRATCH_RESERVE_BYTES": str(128 * KIB),
                "TRANSCODER_UNFIT_EXIT_AFTER_S": str(UNFIT_EXIT_AFTER_S),
            },
        )
        port = int((await sick.wait_for("metrics.listening"))["port"])
        unfit = await sick.wait_for("worker.unfit", timeout_s=60)
        assert unfit["reason"] == "scratch_full"
        status, body = await readyz(port)
        assert status == 503
        checks = body["checks"]
        assert isinstance(checks, dict) and str(checks["worker"]).startswith("unfit: scratch_full")

        healthy = fleet.start("healthy")
        assert await sick.wait_exit(UNFIT_EXIT_AFTER_S + 20) == EXIT_UNFIT
        record = await fleet.wait_for_status(job, "COMPLETED", "FAILED", timeout_s=120)
        assert record["status"] == "COMPLETED", record
        assert sick.outcomes() == ["worker_unfit"]
        assert not sick.events("ffmpeg.started")  # it knew before writing a byte
        assert healthy.outcomes(record["job_id"]) == ["completed"]
        assert record["attempts"] == 2
        await fleet.wait_until("jobs queue drained", fleet.drained, 15)
        dlq = await fleet.dlq_depth()
        assert dlq.visible + dlq.in_flight == 0
        assert not sick.events(level="error", event="job.crashed")
        assert list((small_disk / "scratch").iterdir()) == []  # its root and lock removed
