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
import subprocess
from pathlib import Path
from typing import Any

import pytest
from faults.clips import clip
from faults.harness import Fleet

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
    duration, audio in sync, and the work prefix is gone."""
    async with Fleet.open(settings, clients, tmp_path, **CHUNKED) as fleet:
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
