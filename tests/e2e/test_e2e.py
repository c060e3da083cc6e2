"""End to end: S3 upload -> enqueue handler -> SQS -> worker -> real ffmpeg -> S3 + DynamoDB.

Real sample footage (samples/), the real ffmpeg binary, the emulator over HTTP.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from transcoder.aws.clients import Clients
from transcoder.config import Settings
from transcoder.media.verify import top_level_atoms
from transcoder.ops.bootstrap import Resources
from transcoder.ops.demo import Submitted, submit
from transcoder.runtime import app
from transcoder.runtime.decision import Label
from transcoder.runtime.worker import Worker


class Fleet:
    """One in-process worker plus the means to submit files and wait for their records."""

    def __init__(self, clients: Clients, settings: Settings, services: app.Services) -> None:
        self.clients = clients
        self.settings = settings
        self.services = services
        self.worker: Worker | None = None

    async def submit(self, *files: Path) -> list[Submitted]:
        return await submit(self.clients, self.settings, list(files), user_id="e2e")

    async def wait(self, job: Submitted, timeout_s: float = 120) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            found = await self.services.store.get(job.user_id, job.video_id)
            record = found.model_dump(mode="json", exclude_none=True) if found else {}
            if record.get("status") in ("COMPLETED", "FAILED"):
                return record
            await asyncio.sleep(0.2)
        raise AssertionError(f"{job.video_id} did not finish within {timeout_s} s")

    async def probe(self, key: str, tmp: Path) -> tuple[dict[str, Any], Path]:
        path = tmp / key.replace("/", "_")
        await self.services.storage.download(key, path)
        output = subprocess.run(
            [
                "ffprobe",
                "-v",
                "error",
                "-print_format",
                "json",
                "-show_streams",
                "-show_format",
                path,
            ],
            check=True,
            capture_output=True,
        ).stdout
        return json.loads(output), path


@pytest.fixture
async def fleet(clients: Clients, settings: Settings, resources: Resources) -> AsyncIterator[Fleet]:
    services = await app.connect(clients, settings)
    fleet = Fleet(clients, settings, services)
    fleet.worker = await app.build_worker(settings, services)
    stop = asyncio.Event()
    task = asyncio.create_task(fleet.worker.run(stop))
    yield fleet
    stop.set()
    await asyncio.wait_for(task, timeout=30)
    scratch = settings.scratch_dir
    assert not scratch.exists() or not any(scratch.iterdir()), "scratch files left behind"


async def test_moov_at_end_clip_completes_without_upscaling(
    fleet: Fleet, samples: dict[str, Path], tmp_path: Path
) -> None:
    (job,) = await fleet.submit(samples["bigbuckbunny"])
    record = await fleet.wait(job)
    assert record["status"] == "COMPLETED", record.get("error")
    assert record["attempts"] == 1
    assert record["source"]["width"] == 1280
    renditions = record["renditions"]
    assert renditions["1080p"]["status"] == "SKIPPED"
    assert "1080p" not in str(await fleet.clients.s3.list_objects_v2(Bucket=fleet.settings.bucket))
    rendition = renditions["720p"]
    assert rendition["key"] == "transcoded/720p/e2e/bigbuckbunny.mp4"
    assert (rendition["width"], rendition["height"]) == (1280, 720)
    probe, path = await fleet.probe(rendition["key"], tmp_path)
    kinds = sorted(s["codec_type"] for s in probe["streams"])
    assert kinds == ["audio", "video"]
    video = next(s for s in probe["streams"] if s["codec_type"] == "video")
    assert (video["codec_name"], video["pix_fmt"], video["width"], video["height"]) == (
        "h264",
        "yuv420p",
        1280,
        720,
    )
    assert abs(float(probe["format"]["duration"]) - 5.312) < 0.1
    atoms = top_level_atoms(path)
    assert atoms.index("moov") < atoms.index("mdat")


async def test_clip_without_audio_completes_without_audio(
    fleet: Fleet, samples: dict[str, Path], tmp_path: Path
) -> None:
    (job,) = await fleet.submit(samples["bikes"])
    record = await fleet.wait(job)
    assert record["status"] == "COMPLETED", record.get("error")
    rendition = record["renditions"]["720p"]
    assert (rendition["width"], rendition["height"]) == (640, 272)  # below 720p: its own size
    probe, _ = await fleet.probe(rendition["key"], tmp_path)
    assert [s["codec_type"] for s in probe["streams"]] == ["video"]


async def test_text_file_named_mp4_fails_permanently_on_the_first_attempt(
    fleet: Fleet, tmp_path: Path
) -> None:
    fake = tmp_path / "notes.mp4"
    fake.write_text("this is not a video\n" * 50)
    (job,) = await fleet.submit(fake)
    record = await fleet.wait(job)
    assert record["status"] == "FAILED"
    assert record["attempts"] == 1
    assert record["error"]["code"] == "not_a_video"
    assert record["error"]["retryable"] is False
    depth = await fleet.services.queue.depth()
    assert (depth.visible, depth.in_flight) == (0, 0)


async def test_duplicate_delivery_of_a_completed_job_is_acknowledged_without_reencoding(
    fleet: Fleet, samples: dict[str, Path]
) -> None:
    (job,) = await fleet.submit(samples["bikes"])
    record = await fleet.wait(job)
    assert record["status"] == "COMPLETED"
    key = record["renditions"]["720p"]["key"]
    before = await fleet.clients.s3.head_object(Bucket=fleet.settings.bucket, Key=key)
    assert fleet.worker is not None
    settled_before = len(fleet.worker.settled)

    await fleet.services.queue.send(record["message"])  # the same message, delivered again
    deadline = time.monotonic() + 30
    while len(fleet.worker.settled) == settled_before and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    assert fleet.worker.settled[-1].label is Label.DUPLICATE
    after_record = await fleet.services.store.get(job.user_id, job.video_id)
    assert after_record is not None
    assert after_record.attempts == 1
    after = await fleet.clients.s3.head_object(Bucket=fleet.settings.bucket, Key=key)
    assert after["LastModified"] == before["LastModified"]
    depth = await fleet.services.queue.depth()
    assert (depth.visible, depth.in_flight) == (0, 0)


def test_demo_reports_every_file_and_writes_what_it_says(
    samples: dict[str, Path], tmp_path: Path
) -> None:
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"\x00" * 2048)
    out = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "TRANSCODER_"))}
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "transcoder",
            "demo",
            "--json",
            "--out",
            str(out),
            str(samples["bikes"]),
            str(bad),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**env, "TRANSCODER_LOG_LEVEL": "warning"},
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    lines = [json.loads(line) for line in completed.stdout.splitlines() if line.strip()]
    by_file = {Path(line["file"]).name: line for line in lines}
    assert set(by_file) == {"bikes.mp4", "broken.mp4"}
    good, broken = by_file["bikes.mp4"], by_file["broken.mp4"]
    assert (good["status"], good["attempts"], good["error"]) == ("COMPLETED", 1, None)
    written = out / good["video_id"] / "720p.mp4"
    assert good["renditions"]["720p"]["bytes"] == written.stat().st_size
    assert good["renditions"]["1080p"]["status"] == "SKIPPED"
    assert not (out / good["video_id"] / "1080p.mp4").exists()
    assert broken["status"] == "FAILED"
    assert broken["error"]["code"] == "not_a_video"
    assert broken["renditions"] == {}
    assert not (out / broken["video_id"]).exists()
