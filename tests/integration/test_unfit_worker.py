"""A worker without ffmpeg on its PATH retires before it receives anything: ``worker.unfit``,
``/readyz`` 503 with the reason, exit code 3, and the queued job left for a healthy worker.

A real ``transcoder worker`` process against the emulator; no ffmpeg runs (integration tier).
"""

from __future__ import annotations

from pathlib import Path

import aiohttp
from faults.harness import Fleet

from transcoder.aws.clients import Clients
from transcoder.config import Settings
from transcoder.runtime.worker import EXIT_UNFIT

UNFIT_EXIT_AFTER_S = 6


async def test_a_worker_without_ffmpeg_retires_and_leaves_the_job_alone(
    settings: Settings, clients: Clients, tmp_path: Path
) -> None:
    empty_path = tmp_path / "bin"
    empty_path.mkdir()
    async with Fleet.open(settings, clients, tmp_path) as fleet:
        await fleet.queue.send('{"not": "looked at"}')
        worker = fleet.start(
            "no-ffmpeg",
            extra_env={
                "PATH": str(empty_path),
                "TRANSCODER_UNFIT_EXIT_AFTER_S": str(UNFIT_EXIT_AFTER_S),
            },
        )
        port = int((await worker.wait_for("metrics.listening"))["port"])
        unfit = await worker.wait_for("worker.unfit", timeout_s=60)
        assert unfit["reason"] == "ffmpeg_missing"
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{port}/readyz") as response,
        ):
            assert response.status == 503
            body = await response.json()
        assert body["checks"]["worker"].startswith("unfit: ffmpeg_missing: not on PATH")
        assert await worker.wait_exit(UNFIT_EXIT_AFTER_S + 20) == EXIT_UNFIT
        assert worker.events("worker.stopped", exit_code=EXIT_UNFIT)
        assert worker.outcomes() == []  # it received nothing
        depth = await fleet.depth()
        assert depth.visible == 1  # the message waits for a healthy worker
