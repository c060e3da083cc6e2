"""Chunked jobs end to end (issue 15): real worker processes, real ffmpeg, the emulator.

A 24 s 1280x720 clip with a tone, a 10 s threshold and 6 s chunks: the job is planned as four
chunks plus the audio part, any worker takes any part, and the worker that completes the last part
stitches and publishes. Each scenario checks what the issue asks: the stitched rendition matches a
single pass's frame count and duration and passed the same publish gate; a worker killed mid-chunk
costs that one chunk; SIGTERM mid-chunk hands back that one chunk; a newer upload wins; a chunk
that always fails dead-letters and fails the job with its cause.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest
from faults.clips import clip
from faults.harness import Fleet, WorkerProcess
from support.operator import run

from transcoder.aws.clients import Clients
from transcoder.config import Settings
from transcoder.domain.job import output_key, work_prefix

pytestmark = pytest.mark.slow

CHUNKED = {"chunk_threshold_s": 10.0, "chunk_s": 6.0, "hls": False, "stills": False}
SECONDS = 24


def counted(path: Path) -> dict[str, Any]:
    """The video's frame count and duration, and the audio's duration, as ffprobe reads them."""
    out = subprocess.run(
        [
            *("ffprobe", "-v", "error", "-count_packets", "-print_format", "json"),
            *("-show_entries", "stream=codec_type,nb_read_packets,duration", str(path)),
        ],
        capture_output=True,
        check=True,
        text=True,
    )
    streams = {s["codec_type"]: s for s in json.loads(out.stdout)["streams"]}
    return {
        "frames": int(streams["video"]["nb_read_packets"]),
        "video_s": float(streams["video"]["duration"]),
        "audio_s": float(streams["audio"]["duration"]),
    }


async def download(fleet: Fleet, key: str, path: Path) -> Path:
    response = await fleet.clients.s3.get_object(Bucket=fleet.settings.bucket, Key=key)
    async with response["Body"] as body:
        path.write_bytes(await body.read())
    return path


async def work_keys(fleet: Fleet, job_id: str) -> list[str]:
    listed = await fleet.clients.s3.list_objects_v2(
        Bucket=fleet.settings.bucket, Prefix=work_prefix(job_id)
    )
    return [item["Key"] for item in listed.get("Contents", [])]


async def test_a_chunked_job_matches_the_single_pass(
    settings: Settings, clients: Clients, tmp_path: Path
) -> None:
    """Two workers share the parts; the stitched rendition has the single pass's frames and
    duration, audio in sync; its HLS stream, poster and thumbnails are published from the
    stitched renditions (through the same gate); and the work prefix is gone."""
    outputs = {"hls": True, "stills": True}
    async with Fleet.open(settings, clients, tmp_path, **{**CHUNKED, **outputs}) as fleet:
        source = clip(SECONDS)
        (job,) = await fleet.submit(source)
        pair = [fleet.start("a"), fleet.start("b")]
        record = await fleet.wait_for_status(job, "COMPLETED", "FAILED", timeout_s=240)
        for worker in pair:
            worker.terminate()
        for worker in pair:
            assert await worker.wait_exit(20) == 0
        assert record["status"] == "COMPLETED", record.get("error")
        parts = record["parts"]
        assert len(parts["starts"]) == 4 and parts["audio"] is True
        assert all(state["status"] == "DONE" for state in parts["states"])
        outcomes = fleet.outcomes(record["job_id"])
        assert all(worker.outcomes(record["job_id"]) for worker in pair)  # both took parts
        assert outcomes.count("split") == 1
        assert outcomes.count("part_done") == 4 and outcomes.count("completed") == 1
        assert record["renditions"]["720p"]["status"] == "COMPLETED"
        assert list(record["hls"]["variants"]) == ["720p"]
        assert record["poster"]["key"] and record["thumbnails"]["count"] > 0
        prefix = record["hls"]["master_key"].rsplit("/", 1)[0]
        listed = await fleet.clients.s3.list_objects_v2(Bucket=fleet.settings.bucket, Prefix=prefix)
        segments = [o["Key"] for o in listed["Contents"] if o["Key"].endswith(".m4s")]
        assert len(segments) == record["hls"]["variants"]["720p"]["segments"] == SECONDS // 2
        assert await work_keys(fleet, record["job_id"]) == []
        key = output_key("720p", job.user_id, job.video_id)
        chunked = counted(await download(fleet, key, tmp_path / "chunked.mp4"))

        (single,) = await fleet.submit(source, user="single")
        fleet.start("whole", chunking=False)
        again = await fleet.wait_for_status(single, "COMPLETED", "FAILED", timeout_s=240)
        assert again["status"] == "COMPLETED" and "parts" not in again
        key = output_key("720p", single.user_id, single.video_id)
        whole = counted(await download(fleet, key, tmp_path / "single.mp4"))
        assert chunked["frames"] == whole["frames"]
        assert chunked["video_s"] == pytest.approx(whole["video_s"], abs=0.001)
        assert chunked["audio_s"] == pytest.approx(whole["audio_s"], abs=0.03)
        assert abs(chunked["audio_s"] - chunked["video_s"]) < 0.05


def parts_of(record: dict[str, Any]) -> list[dict[str, Any]]:
    states: list[dict[str, Any]] = record["parts"]["states"]
    return states


async def claimed_chunk(worker: WorkerProcess) -> dict[str, Any]:
    """The worker claimed a chunk (not the job, not the audio) and its ffmpeg is running."""
    for _ in range(40):
        event = await worker.wait_for("ffmpeg.started", timeout_s=60)
        claims = [
            e for e in worker.events("job.claimed") if str(e.get("part", "")).startswith("chunk")
        ]
        if claims and worker.ffmpeg():
            return claims[-1]
    raise AssertionError(f"{worker.name} never ran a chunk: {event}")


async def test_a_worker_killed_mid_chunk_costs_that_chunk_only(
    settings: Settings, clients: Clients, tmp_path: Path
) -> None:
    """SIGKILL mid-chunk: that part's message comes back after its visibility timeout and is
    encoded again; every other part is encoded once."""
    async with Fleet.open(settings, clients, tmp_path, **CHUNKED) as fleet:
        (job,) = await fleet.submit(clip(SECONDS))
        first = fleet.start("first")
        killed = await claimed_chunk(first)
        second = fleet.start("second")
        first.kill()
        assert await first.wait_exit(5) == -9
        record = await fleet.wait_for_status(job, "COMPLETED", "FAILED", timeout_s=240)
        assert record["status"] == "COMPLETED", record.get("error")
        attempts = [state["attempts"] for state in parts_of(record)]
        index = int(killed["part"].split()[1]) - 1
        assert attempts[index] == 2, attempts
        assert sum(attempts) == len(attempts) + 1, attempts  # one part redone, no other
        assert second.outcomes(record["job_id"]).count("completed") == 1
        await fleet.wait_until("jobs queue drained", fleet.drained, 20)


async def test_sigterm_mid_chunk_hands_back_that_chunk(
    settings: Settings, clients: Clients, tmp_path: Path
) -> None:
    """SIGTERM mid-chunk with a grace too short to finish it: ffmpeg killed, that part back to
    QUEUED and visible at once, the worker exits; another worker redoes only that part."""
    async with Fleet.open(settings, clients, tmp_path, shutdown_grace_s=0.5, **CHUNKED) as fleet:
        (job,) = await fleet.submit(clip(SECONDS))
        first = fleet.start("first")
        handed = await claimed_chunk(first)
        second = fleet.start("second")
        await second.wait_for("worker.started")
        first.terminate()
        assert await first.wait_exit(10) == 0
        job_id = handed["job_id"]
        assert first.outcomes(job_id)[-1] == "handed_back"
        record = await fleet.wait_for_status(job, "COMPLETED", "FAILED", timeout_s=240)
        assert record["status"] == "COMPLETED", record.get("error")
        attempts = [state["attempts"] for state in parts_of(record)]
        index = int(handed["part"].split()[1]) - 1
        assert attempts[index] == 2 and sum(attempts) == len(attempts) + 1, attempts
        await fleet.wait_until("jobs queue drained", fleet.drained, 20)


async def test_a_newer_upload_during_a_chunked_job_wins(
    settings: Settings, clients: Clients, tmp_path: Path
) -> None:
    """The same video uploaded again while its parts run: the newer (short, single-pass) upload
    is published, the older parts stop at their fences and their messages are dropped."""
    async with Fleet.open(settings, clients, tmp_path, **CHUNKED) as fleet:
        older = clip(SECONDS)
        (job,) = await fleet.submit(older)
        first = fleet.start("first")
        await claimed_chunk(first)
        newer = tmp_path / "newer" / older.name  # the same video id, other content
        newer.parent.mkdir()
        newer.write_bytes(clip(8).read_bytes())
        (again,) = await fleet.submit(newer)
        assert again.video_id == job.video_id
        record = await fleet.wait_for_status(job, "COMPLETED", timeout_s=240)
        older_id = first.events("job.claimed")[0]["job_id"]
        assert record["job_id"] != older_id and "parts" not in record
        assert record["renditions"]["720p"]["duration_s"] == pytest.approx(8, abs=0.1)
        await fleet.wait_until("jobs queue drained", fleet.drained, 60)
        dropped = fleet.outcomes(older_id)
        assert "completed" not in dropped
        assert {"lease_lost", "superseded"} & set(dropped), dropped  # stopped, then dropped
        assert await work_keys(fleet, record["job_id"]) == []
        # Nothing of the older upload was published over the newer one.
        key = output_key("720p", job.user_id, job.video_id)
        published = counted(await download(fleet, key, tmp_path / "published.mp4"))
        assert published["video_s"] == pytest.approx(8, abs=0.1)


def failing_chunk_ffmpeg(tmp_path: Path, start_frame: int) -> dict[str, str]:
    """A PATH whose ffmpeg fails every encode of the chunk that starts at ``start_frame``."""
    real = shutil.which("ffmpeg")
    assert real is not None
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    wrapper = bin_dir / "ffmpeg"
    wrapper.write_text(
        "#!/bin/sh\n"
        f'case "$*" in *start_pts={start_frame}[!0-9]*)\n'
        '  echo "injected: this chunk always fails" >&2; exit 1;;\n'
        "esac\n"
        f'exec {real} "$@"\n'
    )
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return {"PATH": f"{bin_dir}:{os.environ['PATH']}"}


async def test_a_chunk_that_always_fails_dead_letters_and_fails_the_job(
    settings: Settings, clients: Clients, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Chunk 3 fails on every receive: retried with backoff, its last receive fails the job
    ``retries_exhausted`` naming the chunk and its cause, SQS moves it to the DLQ and the other
    parts' messages are dropped. ``status`` shows the parts; ``dlq redrive`` re-sends the whole
    job, which a healthy worker then completes."""
    async with Fleet.open(settings, clients, tmp_path, **CHUNKED) as fleet:
        (job,) = await fleet.submit(clip(SECONDS))
        # 25 fps, 2 s GOPs, 6 s chunks: chunk 3 starts at frame 300, its encode 12 frames earlier.
        sick = fleet.start("sick", extra_env=failing_chunk_ffmpeg(tmp_path, 300 - 12))
        record = await fleet.wait_for_status(job, "FAILED", "COMPLETED", timeout_s=180)
        assert record["status"] == "FAILED"
        error = record["error"]
        assert error["code"] == "retries_exhausted" and error["retryable"] is True
        assert error["message"].startswith("chunk 3 of 4: gave up after 3 attempts")
        assert "ffmpeg_failed" in error["message"] and "injected" in error["message"]
        assert sick.outcomes(record["job_id"]).count("exhausted") == 1
        await fleet.wait_until("the chunk dead-lettered", fleet.dlq_holds(1), 60)
        await fleet.wait_until("jobs queue drained", fleet.drained, 60)
        sick.terminate()
        assert await sick.wait_exit(20) == 0

        code, out, err = await run(
            fleet.settings, capsys, "status", job.video_id, "--user", job.user_id
        )
        assert code == 0, err
        # The parts taken after the job failed were dropped, so how many are done varies.
        assert re.search(r"parts: [0-4]/5 done, 0 running \(4 chunks \+ audio\)", out), out
        assert "last errors: chunk 3 of 4: retries_exhausted" in out
        code, out, err = await run(
            fleet.settings, capsys, "dlq", "redrive", "--job", record["job_id"]
        )
        assert code == 0, err
        assert "(its whole job)" in out and out.splitlines()[-1] == "1 of 1 message(s) redriven"
        assert (await fleet.record(job))["status"] == "QUEUED"

        fleet.start("healthy")
        again = await fleet.wait_for_status(job, "COMPLETED", timeout_s=240)
        assert again["job_id"] == record["job_id"]
        assert all(state["status"] == "DONE" for state in parts_of(again))
        assert all(state["attempts"] == 1 for state in parts_of(again))  # planned afresh
        await fleet.wait_until("jobs queue drained", fleet.drained, 60)
