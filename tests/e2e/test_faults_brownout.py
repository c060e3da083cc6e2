"""Media verdicts only from media: an S3 brownout during probe or transcode is a retry.

The worker's SDK clients talk to moto through the fault proxy (``tests/faults/proxy.py``). S3
answers ``503 SlowDown`` to every ranged GET past the first bytes while the rule is on: ffprobe of a
moov-at-end MP4 then never finds its ``moov`` ("moov atom not found" reads as ``truncated``), and
ffmpeg's input stops mid-file. Neither may become a permanent verdict: the job is retried
(``aws_unavailable``), and completes once S3 answers again. Under a permanent outage the source
reads end by their deadline, so the stage fails promptly instead of waiting on ffmpeg's reconnects.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from faults.clips import clip
from faults.harness import Fleet
from faults.proxy import S3_SLOW_DOWN, Call, FaultProxy, Rule

from transcoder.aws.clients import Clients
from transcoder.config import Settings

pytestmark = pytest.mark.slow
FIRST_BYTES = 256 * 1024  # the gateway's first block: ffprobe's first read succeeds


def past_first_bytes(call: Call) -> bool:
    return (call.range_start or 0) >= FIRST_BYTES


@pytest.fixture
async def proxy(aws_endpoint: str) -> AsyncIterator[FaultProxy]:
    async with FaultProxy(aws_endpoint, seed=13) as running:
        yield running


async def test_a_brownout_while_probing_a_moov_at_end_mp4_is_a_retry_not_truncated(
    settings: Settings, clients: Clients, tmp_path: Path, proxy: FaultProxy
) -> None:
    brownout = Rule("error", "s3", "GetObject", when=past_first_bytes, error=S3_SLOW_DOWN)
    proxy.add(brownout)
    async with Fleet.open(settings, clients, tmp_path, endpoint_url=proxy.url) as fleet:
        (job,) = await fleet.submit(clip(4, layout="moov-at-end"))
        worker = fleet.start("worker")
        first = await worker.wait_for("job.settled", timeout_s=90)
        brownout.active = False
        assert first["outcome"] == "retry", first
        assert first["code"] == "aws_unavailable"
        record = await fleet.wait_for_status(job, "COMPLETED", timeout_s=120)
        assert record["attempts"] == 2
        assert len(await fleet.outputs(job)) == 1  # 720p; 1080p would be an upscale
    assert brownout.fired > 0


async def test_a_brownout_during_the_transcode_is_a_retry(
    settings: Settings, clients: Clients, tmp_path: Path, proxy: FaultProxy
) -> None:
    # A faststart clip of about 6 MB: ffprobe reads the moov and the first packets (a few hundred
    # KiB), ffmpeg then streams the whole file, so only the transcode reads past 3 MiB.
    def mid_file(call: Call) -> bool:
        return (call.range_start or 0) >= 3 * 1024 * 1024

    brownout = proxy.add(Rule("error", "s3", "GetObject", when=mid_file, error=S3_SLOW_DOWN))
    # The stall watchdog (3 s in the fault settings, 120 s in production) must not fire first:
    # as in production, the reads' deadline ends the stage before it would.
    overrides = {"endpoint_url": proxy.url, "stall_timeout_s": 30.0, "sdk_max_attempts": 2}
    async with Fleet.open(settings, clients, tmp_path, **overrides) as fleet:
        source = clip(12)
        assert source.stat().st_size > 4 * 1024 * 1024
        (job,) = await fleet.submit(source)
        worker = fleet.start("worker")
        await worker.wait_for("ffmpeg.started", timeout_s=60)  # the probe passed the brownout
        first = await worker.wait_for("job.settled", timeout_s=90)
        brownout.active = False
        assert (first["outcome"], first["code"]) == ("retry", "aws_unavailable"), first
        record = await fleet.wait_for_status(job, "COMPLETED", timeout_s=120)
        assert record["attempts"] == 2


async def test_a_permanent_s3_outage_ends_an_mpeg_ps_stage_promptly(
    settings: Settings, clients: Clients, tmp_path: Path, proxy: FaultProxy
) -> None:
    # Hangs, not errors: each read waits until its deadline. Without one, the SDK's read
    # timeout (wait_time_s + 40 s) times its attempts times the gateway's would hold ffmpeg
    # for minutes.
    proxy.add(Rule("hang", "s3", "GetObject", when=past_first_bytes))
    overrides = {"endpoint_url": proxy.url, "source_read_timeout_s": 2.0, "sdk_max_attempts": 2}
    async with Fleet.open(settings, clients, tmp_path, **overrides) as fleet:
        await fleet.submit(clip(4, layout="mpeg-ps"))
        worker = fleet.start("worker")
        claimed = await worker.wait_for("job.claimed", timeout_s=60)
        started = time.monotonic()
        first = await worker.wait_for("job.settled", timeout_s=90)
        took_s = time.monotonic() - started
        assert (first["outcome"], first["code"]) == ("retry", "aws_unavailable"), first
        # 3 reads x 2 s deadline plus the gateway's pauses; ffmpeg's own reconnects are not
        # waited for. Bounded well below the stall timeout's minutes, not a speed claim.
        assert took_s < 30, (took_s, claimed)
        assert worker.events("source.read_failed")
