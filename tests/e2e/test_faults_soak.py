"""Fault scenario 13, the soak: 30 short jobs, three workers, random SIGKILL/SIGTERM.

Jobs (1 s of 1280x720 each) arrive in small batches over the first 30 s while, for 40 s, a chaos
loop kills or stops a random worker every 1-3 s and starts a replacement at once (as ECS would).
Then the fleet settles. Every job must end COMPLETED exactly
once (one completed settlement across all logs, its rendition in S3) or FAILED with a reason code;
no scratch file may be left behind; no message may be left in the jobs queue or the DLQ (the
dead-letter handler runs on what reaches the DLQ, as its SQS trigger would).
"""

from __future__ import annotations

import asyncio
import collections
import random
import time
from pathlib import Path

import pytest
from faults.clips import clip
from faults.harness import Fleet, WorkerProcess

from transcoder.aws.clients import Clients
from transcoder.config import Settings
from transcoder.ops.demo import Submitted

pytestmark = pytest.mark.slow
JOBS, WORKERS, CHAOS_S, SEED = 30, 3, 40.0, 20261122
BATCH, BATCH_EVERY_S = 3, 3.0


async def chaos(fleet: Fleet, slots: list[WorkerProcess], rng: random.Random) -> list[str]:
    """Until CHAOS_S has passed: every 1-3 s, SIGKILL or SIGTERM a random worker, replace it."""
    actions = []
    deadline = time.monotonic() + CHAOS_S
    while time.monotonic() < deadline:
        await asyncio.sleep(rng.uniform(1.0, 3.0))
        index = rng.randrange(len(slots))
        victim = slots[index]
        busy = bool(victim.ffmpeg())
        if rng.random() < 0.5:
            victim.kill()
            await victim.wait_exit(5)
            actions.append(f"SIGKILL{'(busy)' if busy else ''}")
        else:
            victim.terminate()
            if await victim.wait_exit(fleet.settings.shutdown_grace_s + 10) is None:
                victim.kill()
            actions.append(f"SIGTERM{'(busy)' if busy else ''}")
        slots[index] = fleet.start(f"s{index}-{len(actions)}")
    return actions


async def feed(fleet: Fleet) -> list[Submitted]:
    """Submit JOBS uploads, BATCH at a time every BATCH_EVERY_S."""
    jobs: list[Submitted] = []
    while len(jobs) < JOBS:
        batch = [clip(1)] * min(BATCH, JOBS - len(jobs))
        jobs += await fleet.submit(*batch, user=f"soak{len(jobs)}")
        await asyncio.sleep(BATCH_EVERY_S)
    return jobs


async def test_soak_every_job_settles_exactly_once_under_random_kills(
    settings: Settings, clients: Clients, tmp_path: Path
) -> None:
    rng = random.Random(SEED)
    started = time.monotonic()
    async with Fleet.open(settings, clients, tmp_path, shutdown_grace_s=3.0) as fleet:
        slots = [fleet.start(f"s{i}") for i in range(WORKERS)]
        jobs, actions = await asyncio.gather(feed(fleet), chaos(fleet, slots, rng))

        async def settled() -> bool:
            if (await fleet.dlq_depth()).visible:
                await fleet.run_dlq_handler()
            records = [await fleet.record(j) for j in jobs]
            return all(r.get("status") in ("COMPLETED", "FAILED") for r in records)

        await fleet.wait_until("every job settled", settled, 180)
        await fleet.wait_until("jobs queue drained", fleet.drained, 60)
        await fleet.stop_all()
        for worker in fleet.workers:
            code = worker.popen.returncode
            # SIGTERM before the handlers are installed (mid start-up) kills like SIGKILL would.
            assert code in (0, -9) or (code == -15 and not worker.events("worker.started"))

        records = [await fleet.record(j) for j in jobs]
        statuses = collections.Counter(r["status"] for r in records)
        for job, record in zip(jobs, records, strict=True):
            outcomes = fleet.outcomes(record["job_id"])
            if record["status"] == "COMPLETED":
                assert outcomes.count("completed") <= 1, (job.video_id, outcomes)
                assert await fleet.outputs(job), job.video_id
            else:
                assert record["error"]["code"], job.video_id
        leftovers = sorted(str(p) for p in fleet.settings.scratch_dir.rglob("*"))
        assert leftovers == []
        assert await fleet.drained()
        dlq = await fleet.dlq_depth()
        assert (dlq.visible, dlq.in_flight) == (0, 0)
        everything = collections.Counter(o for w in fleet.workers for o in w.outcomes())
        print(
            f"scenario 13: {len(actions)} signals {collections.Counter(actions)}; "
            f"{len(fleet.workers)} worker processes; records {dict(statuses)}; "
            f"settlements {dict(everything)}; {time.monotonic() - started:.0f} s"
        )
