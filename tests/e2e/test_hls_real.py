"""HLS end to end: what ffmpeg's tee writes passes the gate, a badly cut stream does not, and a
worker's job publishes its stream at the layout keys (moto over HTTP, real ffmpeg, real footage).

The corpus test (test_corpus.py) fetches every valid case's HLS as a player would and compares
it with the MP4 renditions; this file checks the gate's own reading of real fMP4 files against
ffprobe, and the objects, content types and record of one job.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from transcoder.aws.clients import Clients
from transcoder.config import Settings
from transcoder.domain.errors import OutputInvalid
from transcoder.domain.job import hls_prefix
from transcoder.domain.rungs import Rung
from transcoder.media import fmp4, hls, ladder, probe
from transcoder.media.ffmpeg import EncodeOptions, build_args
from transcoder.ops.bootstrap import Resources
from transcoder.ops.demo import submit
from transcoder.runtime import app

LADDER = (
    Rung(name="180p", short_side=180, crf=30, maxrate_kbps=400, bufsize_kbps=800),
    Rung(name="360p", short_side=360, crf=30, maxrate_kbps=1000, bufsize_kbps=2000),
)


async def encode(source: Path, scratch: Path) -> tuple[probe.MediaInfo, ladder.Plan]:
    """The worker's own command line for a two-rung ladder, MP4 and HLS from one encode."""
    media = probe.parse(await probe.run(str(source), timeout_s=30), size_bytes=1)
    plan = ladder.plan(media, LADDER, ("180p", "360p"), max_fps=60, gop_s=2.0)
    outputs = {target.name: scratch / f"{target.name}.mp4" for target in plan.targets}
    output = hls.HlsOutput(scratch / "hls", hls.hls_time_s(plan, media.fps))
    output.prepare(plan)
    args = build_args(str(source), plan, outputs, EncodeOptions(), hls_output=output)
    args = [arg for arg in args if arg not in ("-progress", "pipe:1")]
    subprocess.run(["nice", "-n", "10", *args], check=True, capture_output=True, timeout=120)
    return media, plan


def first_packet_is_key(init: Path, segment: Path, joined: Path) -> bool:
    joined.write_bytes(init.read_bytes() + segment.read_bytes())
    command = ["ffprobe", "-v", "error", "-select_streams", "v:0", "-read_intervals", "%+#1"]
    command += ["-show_entries", "packet=flags", "-of", "csv=p=0", str(joined)]
    done = subprocess.run(command, capture_output=True, text=True, check=True, timeout=30)
    return done.stdout.strip().startswith("K")


def ffprobe_video(path: Path) -> dict[str, Any]:
    command = ["ffprobe", "-v", "error", "-print_format", "json", "-show_streams", str(path)]
    done = subprocess.run(command, capture_output=True, check=True, timeout=30)
    found: dict[str, Any] = next(
        s for s in json.loads(done.stdout)["streams"] if s["codec_type"] == "video"
    )
    return found


async def test_what_the_tee_writes_passes_the_gate_as_ffprobe_reads_it(
    samples: dict[str, Path], tmp_path: Path
) -> None:
    media, plan = await encode(samples["bigbuckbunny"], tmp_path)

    variants = hls.check(tmp_path / "hls", media, plan)

    assert [v.name for v in variants] == ["180p", "360p"]
    for variant in variants:
        folder = tmp_path / "hls" / variant.name
        init = fmp4.read_init(folder / hls.INIT)
        segments = sorted(folder.glob("seg_*.m4s"))
        assert variant.segments == len(segments) == 3  # 5.3 s in 2 s GOPs
        for segment in segments:  # the box reading agrees with ffprobe's packet flags
            joined = tmp_path / "joined.mp4"
            assert fmp4.starts_with_keyframe(segment, init)
            assert first_packet_is_key(folder / hls.INIT, segment, joined)
        mp4 = ffprobe_video(tmp_path / f"{variant.name}.mp4")
        level, profile = int(mp4["level"]), 100  # High
        assert variant.codecs == f"avc1.{profile:02x}00{level:02x},mp4a.40.2"
        assert (variant.width, variant.height) == (mp4["width"], mp4["height"])
        assert abs(variant.duration_s - float(mp4["duration"])) < 0.05
        assert variant.peak_bps >= variant.average_bps > 0


async def test_segments_cut_between_keyframes_fail_the_gate(
    samples: dict[str, Path], tmp_path: Path
) -> None:
    media, plan = await encode(samples["bigbuckbunny"], tmp_path)
    # the same packets, re-cut every second whatever the frame (split_by_time): half the
    # segments then start mid-GOP and a player would show garbage until the next keyframe
    folder = tmp_path / "hls" / "360p"
    for stale in folder.iterdir():
        stale.unlink()
    command = ["ffmpeg", "-v", "error", "-i", str(tmp_path / "360p.mp4"), "-c", "copy"]
    command += ["-f", "hls", "-hls_time", "1", "-hls_flags", "split_by_time"]
    command += ["-hls_playlist_type", "vod", "-hls_segment_type", "fmp4"]
    command += ["-hls_segment_filename", str(folder / "seg_%05d.m4s"), str(folder / "index.m3u8")]
    subprocess.run(command, check=True, capture_output=True, timeout=60)

    with pytest.raises(OutputInvalid, match=r"seg_0000\d\.m4s does not start with a keyframe"):
        hls.check_variant(tmp_path / "hls", plan.targets[1], media, plan)


async def test_a_job_publishes_its_stream_at_the_layout_keys_and_records_it(
    clients: Clients, settings: Settings, resources: Resources, samples: dict[str, Path]
) -> None:
    s3 = clients.s3
    prefix = hls_prefix("e2e", "bigbuckbunny")
    # what an older, longer publish of this video left: a segment and a rendition no longer made
    for key in (f"{prefix}720p/seg_00009.m4s", f"{prefix}1080p/index.m3u8"):
        await s3.put_object(Bucket=settings.bucket, Key=key, Body=b"old")
    record = await run_one(clients, settings, samples["bigbuckbunny"])

    assert record.hls is not None
    assert record.hls.master_key == f"{prefix}master.m3u8"
    assert record.hls.segment_s == 2.0
    [(name, variant)] = record.hls.variants.items()  # 1080p is skipped: no upscaling
    assert (name, variant.playlist_key) == ("720p", f"{prefix}720p/index.m3u8")
    assert (variant.width, variant.height, variant.segments) == (1280, 720, 3)
    listed = await s3.list_objects_v2(Bucket=settings.bucket, Prefix=prefix)
    keys = sorted(item["Key"] for item in listed.get("Contents", []))
    segments = [f"{prefix}720p/seg_{n:05d}.m4s" for n in range(3)]
    assert keys == sorted(
        [f"{prefix}master.m3u8", f"{prefix}720p/index.m3u8", f"{prefix}720p/init.mp4", *segments]
    )  # the older publish's leftovers are gone
    expected_types = {
        f"{prefix}master.m3u8": "application/vnd.apple.mpegurl",
        f"{prefix}720p/index.m3u8": "application/vnd.apple.mpegurl",
        f"{prefix}720p/init.mp4": "video/mp4",
        **{key: "video/iso.segment" for key in segments},
    }
    for key, content_type in expected_types.items():
        head = await s3.head_object(Bucket=settings.bucket, Key=key)
        assert head["ContentType"] == content_type, key
    got = await s3.get_object(Bucket=settings.bucket, Key=f"{prefix}master.m3u8")
    master = await got["Body"].read()
    assert b"720p/index.m3u8" in master and f"BANDWIDTH={variant.bandwidth},".encode() in master
    assert record.renditions["720p"].key == "transcoded/720p/e2e/bigbuckbunny.mp4"


async def test_with_hls_off_a_job_publishes_only_its_mp4s(
    clients: Clients, settings: Settings, resources: Resources, samples: dict[str, Path]
) -> None:
    record = await run_one(clients, settings.model_copy(update={"hls": False}), samples["bikes"])

    assert record.hls is None
    assert record.renditions["720p"].key == "transcoded/720p/e2e/bikes.mp4"
    listed = await clients.s3.list_objects_v2(Bucket=settings.bucket, Prefix="transcoded/hls/")
    assert listed.get("KeyCount", 0) == 0


async def run_one(clients: Clients, settings: Settings, source: Path) -> Any:
    """Submit ``source`` as user e2e, run one worker until its job is COMPLETED."""
    services = await app.connect(clients, settings)
    (job,) = await submit(clients, settings, [source], user_id="e2e")
    worker = await app.build_worker(settings, services)
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    try:
        return await wait_completed(services, job.user_id, job.video_id)
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=60)


async def wait_completed(services: app.Services, user_id: str, video_id: str) -> Any:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        record = await services.store.get(user_id, video_id)
        if record is not None and record.status in ("COMPLETED", "FAILED"):
            assert record.status == "COMPLETED", record.error
            return record
        await asyncio.sleep(0.2)
    raise AssertionError(f"{video_id} did not finish in 120 s")
