"""Poster and thumbnails end to end: real ffmpeg, the worker, the emulator.

A clip that opens on six seconds of black (most of the poster's candidate window: ffmpeg's
``thumbnail`` filter alone picks a black frame there) must still get a poster of real footage; a
clip that is dark throughout gets one anyway (the fallback) and completes;
``TRANSCODER_STILLS=false`` publishes no stills. The corpus (test_corpus.py) checks every valid
case's stills with the same helpers (tests/support/stills.py).
"""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from support import stills as seen

from transcoder.aws.clients import Clients
from transcoder.config import Settings
from transcoder.domain.rungs import DEFAULT_LADDER
from transcoder.media import ladder, probe, stills, verify
from transcoder.media.ffmpeg import EncodeOptions, build_args, parse_progress_block
from transcoder.ops.bootstrap import Resources
from transcoder.ops.demo import submit
from transcoder.runtime import app

BLACK_S, FOOTAGE_S = 6, 3


def ffmpeg(*args: str) -> None:
    command = ["nice", "-n", "10", "ffmpeg", "-nostdin", "-v", "error", "-y", *args]
    subprocess.run(command, check=True, timeout=120)


@pytest.fixture(scope="module")
def clips(samples: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """``black_start``: 6 s of black, then 3 s of footage (with its sound); ``all_dark``: 3 s of
    a picture that is black but for a faint gradient."""
    folder = tmp_path_factory.mktemp("stills")
    black_start, all_dark = folder / "black_start.mp4", folder / "all_dark.mp4"
    x264 = ("-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p")
    ffmpeg(
        *("-f", "lavfi", "-i", f"color=black:s=1280x720:r=25:d={BLACK_S}"),
        *("-i", str(samples["bigbuckbunny"])),
        "-filter_complex",
        f"[1:v]trim=duration={FOOTAGE_S},setpts=PTS-STARTPTS[f];[0:v][f]concat=n=2:v=1:a=0[v]",
        *("-map", "[v]", "-map", "1:a", "-t", str(BLACK_S + FOOTAGE_S), *x264, "-c:a", "aac"),
        str(black_start),
    )
    ffmpeg(
        *("-f", "lavfi", "-i", "gradients=s=640x360:r=25:d=3:c0=0x000000:c1=0x101010"),
        *x264,
        str(all_dark),
    )
    return {"black_start": black_start, "all_dark": all_dark}


async def transcode(
    clients: Clients, settings: Settings, files: Sequence[Path]
) -> list[dict[str, Any]]:
    """One worker until every job is terminal; the job records as stored."""
    jobs = await submit(clients, settings, list(files), user_id="stills")
    services = await app.connect(clients, settings)
    worker = await app.build_worker(settings, services)
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    try:
        for _ in range(600):
            found = [await services.store.get(j.user_id, j.video_id) for j in jobs]
            if all(r is not None and r.status in ("COMPLETED", "FAILED") for r in found):
                return [r.model_dump(mode="json") for r in found if r is not None]
            await asyncio.sleep(0.2)
        raise AssertionError("the jobs did not finish in 120 s")
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=60)


async def content_type(clients: Clients, settings: Settings, key: str) -> str:
    head = await clients.s3.head_object(Bucket=settings.bucket, Key=key)
    return str(head["ContentType"])


async def test_a_clip_that_opens_on_black_gets_a_poster_of_footage_and_a_dark_one_still_completes(
    clips: dict[str, Path],
    clients: Clients,
    settings: Settings,
    resources: Resources,
    tmp_path: Path,
) -> None:
    black_start, all_dark = await transcode(
        clients, settings, [clips["black_start"], clips["all_dark"]]
    )

    assert black_start["status"] == "COMPLETED", black_start["error"]
    storage = (await app.connect(clients, settings)).storage
    found = await seen.download(storage, "stills", "black_start", tmp_path)
    assert seen.problems(black_start, found, (1280, 720), tolerance_s=0.1) == []
    first_frame = tmp_path / "first.jpg"
    ffmpeg("-i", str(clips["black_start"]), "-frames:v", "1", "-update", "1", str(first_frame))
    assert seen.picture_stat(first_frame, "YAVG") < 17  # the clip does start on black
    assert seen.picture_stat(found.poster, "YAVG") > 60  # the poster does not
    assert black_start["poster"]["key"] == "transcoded/poster/stills/black_start.jpg"
    thumbnails = black_start["thumbnails"]
    assert thumbnails["sprite_key"] == "transcoded/thumbnails/stills/black_start/sprite.jpg"
    assert thumbnails["vtt_key"] == "transcoded/thumbnails/stills/black_start/thumbnails.vtt"
    assert (thumbnails["interval_s"], thumbnails["count"]) == (1.0, BLACK_S + FOOTAGE_S)
    types = [
        await content_type(clients, settings, key)
        for key in (black_start["poster"]["key"], thumbnails["sprite_key"], thumbnails["vtt_key"])
    ]
    assert types == ["image/jpeg", "image/jpeg", "text/vtt"]
    assert black_start["poster"]["bytes"] == found.poster.stat().st_size

    assert all_dark["status"] == "COMPLETED", all_dark["error"]
    dark = await seen.download(storage, "stills", "all_dark", tmp_path)
    assert seen.problems(all_dark, dark, (640, 360), tolerance_s=0.1) == []


async def test_stills_can_be_turned_off(
    clips: dict[str, Path],
    clients: Clients,
    settings: Settings,
    resources: Resources,
) -> None:
    assert app.pipeline_config(settings.model_copy(update={"stills": False})).stills is False
    [record] = await transcode(
        clients, settings.model_copy(update={"stills": False}), [clips["all_dark"]]
    )

    assert record["status"] == "COMPLETED", record["error"]
    assert (record["poster"], record["thumbnails"]) == (None, None)
    for prefix in ("transcoded/poster/", "transcoded/thumbnails/"):
        listed = await clients.s3.list_objects_v2(Bucket=settings.bucket, Prefix=prefix)
        assert listed.get("Contents", []) == [], prefix
    await clients.s3.head_object(Bucket=settings.bucket, Key="transcoded/720p/stills/all_dark.mp4")


async def test_the_encode_reports_progress_while_the_stills_are_pending(
    clips: dict[str, Path], tmp_path: Path
) -> None:
    """ffmpeg prints no -progress until every output has written its header, which an image
    output does with its first picture: without the placeholders, the sprite (made at the end)
    would hide the whole encode from the stall detector."""
    source = clips["black_start"]
    media = probe.parse(await probe.run(str(source), timeout_s=60), size_bytes=1)
    plan = ladder.plan(media, DEFAULT_LADDER, ("720p",), max_fps=60, gop_s=2)
    made = stills.plan(media.duration_s, plan, verify.tolerance_s(media), tmp_path)
    args = build_args(
        str(source), plan, {"720p": tmp_path / "720p.mp4"}, EncodeOptions(), stills=made
    )
    # Read at 3x the clip's rate, so the encode lasts about 3 s whatever the machine.
    args[args.index("-i") : args.index("-i")] = ["-readrate", "3"]
    command = ["nice", "-n", "10", *args]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=True)
    blocks, fields = [], {}
    for line in done.stdout.splitlines():
        key, _, value = line.partition("=")
        fields[key] = value
        if key == "progress":
            blocks.append(parse_progress_block(fields))
            fields = {}
    during = [b for b in blocks if not b.done and 0 < b.frame < blocks[-1].frame]
    assert len(during) >= 3, blocks
    made.files.vtt.write_text(stills.vtt_text(made))
    stills.check(made, tolerance_s=verify.tolerance_s(media))  # and the stills are still right
