"""End to end: a dead-lettered job redriven with the operator CLI and completed by a real worker
with real ffmpeg."""

from __future__ import annotations

import asyncio
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from support.operator import Aws, dlq_depth, run

from transcoder.aws.clients import Clients
from transcoder.config import Settings
from transcoder.ops.bootstrap import Resources
from transcoder.ops.demo import submit
from transcoder.runtime import app


@pytest.fixture
def aws(settings: Settings, resources: Resources) -> Aws:
    return Aws(settings, resources)


def short_clip(source: Path, target: Path, seconds: float = 2.0) -> Path:
    """The first seconds of a sample, stream-copied (no encode), to keep the CPU for the worker."""
    command = ["ffmpeg", "-v", "error", "-y", "-i", str(source), "-t", str(seconds)]
    subprocess.run([*command, "-c", "copy", str(target)], check=True, timeout=60)
    return target


async def wait_for_status(
    services: app.Services, user: str, video: str, want: str, timeout_s: float
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    record: dict[str, Any] | None = None
    while time.monotonic() < deadline:
        found = await services.store.get(user, video)
        record = found.model_dump(mode="json", exclude_none=True) if found else None
        if record and record.get("status") == want:
            return record
        await asyncio.sleep(0.25)
    raise AssertionError(
        f"{video} is {record and record.get('status')}, not {want}, after {timeout_s} s"
    )


async def test_a_dead_lettered_job_is_redriven_and_completed_by_a_worker(
    settings: Settings,
    clients: Clients,
    aws: Aws,
    resources: Resources,
    samples: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    clip = short_clip(samples["bikes"], tmp_path / "bikes.mp4")
    (job,) = await submit(clients, settings, [clip], user_id="ops")  # through the real handler
    aws.dead_letter_and_mark()
    services = await app.connect(clients, settings)
    failed = await services.store.get(job.user_id, job.video_id)
    assert failed is not None and failed.error is not None
    assert failed.error.code == "retries_exhausted"
    assert failed.job_id is not None

    code, out, err = await run(settings, capsys, "dlq", "redrive", "--job", failed.job_id)
    assert code == 0, err
    assert out.splitlines()[-1] == "1 of 1 message(s) redriven"
    redriven = await services.store.get(job.user_id, job.video_id)
    assert redriven is not None and redriven.status == "QUEUED"

    worker = await app.build_worker(settings, services)
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    try:
        record = await wait_for_status(services, job.user_id, job.video_id, "COMPLETED", 240)
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=60)
    assert record["job_id"] == failed.job_id
    rendition = record["renditions"]["720p"]
    assert (rendition["status"], rendition["width"], rendition["height"]) == ("COMPLETED", 640, 272)
    head = await clients.s3.head_object(Bucket=settings.bucket, Key=rendition["key"])
    assert head["ContentLength"] == rendition["bytes"]
    assert dlq_depth(aws, resources.dlq_url) == 0
