"""End to end: a rendition above the multipart threshold is uploaded in parts and checksummed.

The real worker, the real ffmpeg and the moto server over HTTP. The source is 14 s of 720p
noise, which x264 cannot compress below the 720p rung's 4.5 Mbit/s cap, so its rendition is
about 7 MiB: over a lowered 5 MiB threshold (S3's minimum part size), uploaded as two parts.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
import zlib
from pathlib import Path
from typing import Any

import pytest

from transcoder.aws.checksum import crc32_b64
from transcoder.aws.clients import Clients
from transcoder.config import Settings
from transcoder.ops.bootstrap import Resources
from transcoder.ops.demo import submit
from transcoder.runtime import app

pytestmark = pytest.mark.e2e

MIB = 1024**2


def noisy_720p_clip(path: Path, duration_s: int = 14) -> Path:
    subprocess.run(
        [
            "ffmpeg", "-v", "error", "-y",
            "-f", "lavfi", "-i", f"testsrc2=size=1280x720:rate=30:duration={duration_s}",
            "-vf", "noise=alls=40:allf=t+u",
            "-c:v", "libx264", "-preset", "ultrafast", "-crf", "26", "-pix_fmt", "yuv420p",
            path,
        ],
        check=True,
    )  # fmt: skip
    return path


async def finished(services: app.Services, user_id: str, video_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        found = await services.store.get(user_id, video_id)
        record = found.model_dump(mode="json", exclude_none=True) if found else {}
        if record.get("status") in ("COMPLETED", "FAILED"):
            return record
        await asyncio.sleep(0.25)
    raise AssertionError(f"{video_id} did not finish")


async def test_a_rendition_over_the_threshold_is_uploaded_in_parts_with_a_full_crc32(
    clients: Clients, settings: Settings, resources: Resources, tmp_path: Path
) -> None:
    settings = settings.model_copy(
        update={
            "multipart_threshold_bytes": 5 * MIB,
            "multipart_part_bytes": 5 * MIB,
            "x264_preset": "superfast",  # ultrafast is Constrained Baseline: the gate wants High
        }
    )
    source = noisy_720p_clip(tmp_path / "noise.mp4")
    services = await app.connect(clients, settings)
    worker = await app.build_worker(settings, services)
    stop = asyncio.Event()
    running = asyncio.create_task(worker.run(stop))
    try:
        (job,) = await submit(clients, settings, [source], user_id="mp")
        record = await finished(services, job.user_id, job.video_id)
    finally:
        stop.set()
        await asyncio.wait_for(running, timeout=60)

    assert record["status"] == "COMPLETED", record.get("error")
    rendition = record["renditions"]["720p"]
    assert rendition["bytes"] > 5 * MIB
    head = await clients.s3.head_object(
        Bucket=settings.bucket, Key=rendition["key"], ChecksumMode="ENABLED"
    )
    parts = -(-int(rendition["bytes"]) // (5 * MIB))
    assert parts >= 2
    assert str(head["ETag"]).strip('"').endswith(f"-{parts}")  # a multipart object
    assert head["ContentLength"] == rendition["bytes"]
    copy = tmp_path / "copy.mp4"
    await services.storage.download(rendition["key"], copy)
    assert head.get("ChecksumType") == "FULL_OBJECT"
    assert head.get("ChecksumCRC32") == crc32_b64(zlib.crc32(copy.read_bytes()))
