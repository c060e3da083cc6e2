"""ECS task scale-in protection end to end: a real worker process on real ffmpeg, and a local
stand-in for the ECS agent (tests/faults/agent.py) that records each call."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from faults.agent import Agent
from faults.clips import clip
from faults.harness import Fleet

from transcoder.aws.clients import Clients
from transcoder.config import Settings


@pytest.fixture
async def agent() -> AsyncIterator[Agent]:
    stand_in = await Agent().start()
    yield stand_in
    await stand_in.stop()


async def test_real_worker_protects_around_a_job_and_waits_while_refused(
    settings: Settings, clients: Clients, tmp_path: Path, agent: Agent
) -> None:
    agent.mode = "refuse"
    async with Fleet.open(settings, clients, tmp_path) as fleet:
        (job,) = await fleet.submit(clip(2))
        worker = fleet.start("worker", extra_env={"ECS_AGENT_URI": agent.url})
        await worker.wait_for("worker.unprotected", timeout_s=30)
        await asyncio.sleep(2)
        assert (await fleet.record(job))["status"] == "QUEUED"  # refused: nothing received
        assert (await fleet.depth()).visible == 1
        agent.mode = "grant"
        await fleet.wait_for_status(job, "COMPLETED", timeout_s=60)
        await fleet.wait_until("released when idle", released(agent), 15)
        granted_calls = [c for c in agent.calls if c.enabled]
        assert granted_calls[0].body["ExpiresInMinutes"] == 15  # the default 900 s window
        claimed = worker.events("job.claimed")
        assert claimed


def released(agent: Agent) -> Any:
    async def check() -> bool:
        return bool(agent.calls) and not agent.calls[-1].enabled and agent.mode == "grant"

    return check
