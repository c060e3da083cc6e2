"""Fast idle shutdown, as ``docker stop`` sees it: a real ``transcoder worker`` process, idle in a
20 s long poll against the emulator, exits 0 soon after SIGTERM instead of waiting the poll out.

No job is submitted, so no ffmpeg runs (integration tier).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from faults.harness import Fleet

from transcoder.aws.clients import Clients
from transcoder.config import Settings

# docker stop waits 10 s before SIGKILL; the issue asks for 2 s. The bound is generous (a loaded
# machine), yet far below the 20 s the open long poll would otherwise hold the worker.
EXIT_BOUND_S = 5.0


async def test_sigterm_on_an_idle_worker_ends_its_long_poll(
    settings: Settings, clients: Clients, tmp_path: Path
) -> None:
    async with Fleet.open(settings, clients, tmp_path, wait_time_s=20) as fleet:
        worker = fleet.start("idle")
        await worker.wait_for("worker.started", timeout_s=60)
        await asyncio.sleep(1.5)  # let it get well into its first 20 s ReceiveMessage
        worker.terminate()
        signalled = time.monotonic()
        code = await worker.wait_exit(30)
        took_s = time.monotonic() - signalled
        print(f"idle SIGTERM -> exit {code} in {took_s:.2f} s")
        assert code == 0, worker.tail()
        assert took_s < EXIT_BOUND_S, f"exit took {took_s:.1f} s\n{worker.tail()}"
        assert worker.events("queue.receive_cancelled")
        assert worker.events("worker.stopped")
