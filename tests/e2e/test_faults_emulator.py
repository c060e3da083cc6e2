"""Fault scenario 9: the AWS endpoint goes away mid-job and comes back empty.

This scenario runs its own moto server on a fixed port, stops it while a worker encodes, and
starts it again on the same port. moto keeps its state in memory, so the restarted endpoint knows
nothing: no bucket, no queue, no table (as if a region had lost them). What a user can observe:

* during the outage the worker retries its renewals inside the margin left on the message's
  visibility, then gives the job up without writing anything (ffmpeg killed); its receive loop
  backs off exponentially (capped at 30 s) and the process never exits or restarts;
* once the resources are recreated and the upload replayed (what re-running the S3 event does),
  the same worker process takes the job and completes it.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from faults.clips import clip
from faults.harness import Fleet

from transcoder.aws.clients import Clients, open_clients
from transcoder.config import Settings
from transcoder.ops.bootstrap import bootstrap
from transcoder.ops.emulator import Emulator, free_port

pytestmark = pytest.mark.slow
OUTAGE_S = 15.0


async def recreate(clients: Clients, settings: Settings, attempts: int = 20) -> None:
    """Bootstrap again; the first calls may hit connections pooled before the restart."""
    for attempt in range(attempts):
        try:
            await bootstrap(clients, settings)
            return
        except Exception:
            if attempt == attempts - 1:
                raise
            await asyncio.sleep(0.5)


async def test_emulator_restart_mid_job_backs_off_and_recovers(
    settings: Settings, tmp_path: Path
) -> None:
    emulator = Emulator(port=free_port())
    emulator.start()
    try:
        own = settings.model_copy(update={"endpoint_url": emulator.url})
        async with (
            open_clients(own, max_attempts=1) as clients,
            Fleet.open(own, clients, tmp_path) as fleet,
        ):
            await fleet.submit(clip(12))
            worker = fleet.start("survivor")
            await worker.wait_for("ffmpeg.started")
            emulator.stop()
            down_at = time.monotonic()
            settled = await worker.wait_for("job.settled", timeout_s=60)
            assert settled["outcome"] in ("lease_lost", "retry")
            assert not worker.ffmpeg()
            await worker.wait_for("worker.backing_off", timeout_s=30)
            await asyncio.sleep(max(0.0, OUTAGE_S - (time.monotonic() - down_at)))
            emulator.start()
            await recreate(clients, fleet.settings)
            (again,) = await fleet.submit(clip(12))
            record = await fleet.wait_for_status(again, "COMPLETED", timeout_s=120)
            assert record["attempts"] == 1
            assert worker.alive
            assert len(worker.events("worker.started")) == 1  # no restart, no crash loop
            assert worker.events("liveness.renew_failed")  # retried inside the margin first
            waits = [e["retry_in_s"] for e in worker.events("worker.backing_off")]
            assert max(waits) <= 30
            print(f"scenario 9: first job {settled['outcome']}; receive backoff {waits}")
    finally:
        emulator.stop()
