"""Chunked encoding on real footage with the real ffmpeg: chunks of 4 s, stitched by bitstream copy,
against a single pass of the same plan.

The source is 20 s of the Big Buck Bunny sample (1280x720, 25 fps) looped and re-encoded with a 3 s
GOP, so the source's keyframes are not on the output's 2 s grid and every chunk's seek lands on a
keyframe before its boundary. The ladder is 360p + 540p to keep the CPU low (about 40 CPU-s for
the module); what is proven does not depend on the size.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from transcoder.domain.errors import OutputInvalid
from transcoder.domain.rungs import Rung
from transcoder.media import encoder, ladder, probe, verify
from transcoder.media.chunks import (
    ChunkPlan,
    audio_args,
    chunk_args,
    concat_list,
    plan_chunks,
    stitch_args,
)
from transcoder.media.ffmpeg import EncodeOptions, build_args
from transcoder.media.progress import Progress
from transcoder.media.stitch import (
    check_stitched,
    chunk_outputs,
    chunk_path,
    probe_packets,
    stitch,
    timeline,
)

RUNGS = (
    Rung(name="360p", short_side=360, crf=23, maxrate_kbps=1_500, bufsize_kbps=3_000),
    Rung(name="540p", short_side=540, crf=23, maxrate_kbps=3_000, bufsize_kbps=6_000),
)
# The bit-exact frame checks need no size: the smallest rung keeps their CPU low.
TINY = (Rung(name="180p", short_side=180, crf=23, maxrate_kbps=500, bufsize_kbps=1_000),)
OPTIONS = EncodeOptions(threads=1)
CHUNK_S = 4.0


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", *args], check=True, timeout=300)


def ffprobe(path: Path, *args: str) -> Any:
    done = subprocess.run(
        ["ffprobe", "-v", "error", "-of", "json", *args, str(path)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    return json.loads(done.stdout)


@pytest.fixture(scope="module")
def footage(samples: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("chunks") / "bbb-20s.mp4"
    ffmpeg(
        *("-stream_loop", "-1", "-i", str(samples["bigbuckbunny"]), "-t", "20"),
        *("-c:v", "libx264", "-preset", "ultrafast", "-g", "75", "-c:a", "aac", str(path)),
    )
    return path


@pytest.fixture(scope="module")
def vfr_footage(footage: Path) -> Path:
    """The same clip with every third frame kept from 4.5 s to 9.5 s: 25 -> 8.3 -> 25 fps."""
    path = footage.with_name("bbb-vfr.mp4")
    keep = "select='if(between(t,4.5,9.5),not(mod(n,3)),1)'"
    ffmpeg(*("-i", str(footage), "-vf", keep, "-vsync", "vfr"), "-preset", "ultrafast", str(path))
    return path


@dataclass(frozen=True)
class Encoded:
    media: probe.MediaInfo
    plan: ladder.Plan
    chunks: ChunkPlan
    single: dict[str, Path]
    chunked: dict[str, Path]
    work: Path


def plan_of(media: probe.MediaInfo, rungs: tuple[Rung, ...]) -> ladder.Plan:
    return ladder.plan(media, rungs, tuple(r.name for r in rungs), max_fps=60, gop_s=2)


async def encode_both(
    source: Path,
    work: Path,
    rungs: tuple[Rung, ...],
    rewrite: Any = list,
    postroll: int = 0,
    warmup: int = 0,
) -> Encoded:
    """A single pass and a chunked encode (chunks + audio + stitch) of the same plan."""
    media = probe.parse(await probe.run(str(source), timeout_s=60), size_bytes=1)
    plan = plan_of(media, rungs)
    chunks = plan_chunks(media, plan, CHUNK_S, postroll_frames=postroll, warmup_frames=warmup)
    single = {t.name: work / f"single-{t.name}.mp4" for t in plan.targets}
    await encoder.run(rewrite(build_args(str(source), plan, single, OPTIONS)), Progress())
    names = [t.name for t in plan.targets]
    for chunk in chunks.chunks:
        outputs = chunk_outputs(work, names, chunk.index)
        args = chunk_args(str(source), plan, chunks, chunk, outputs, OPTIONS)
        await encoder.run(rewrite(args), Progress())
    audio = work / "audio.m4a"
    await encoder.run(audio_args(str(source), plan, audio, OPTIONS), Progress())
    chunked = {name: work / f"chunked-{name}.mp4" for name in names}
    for name, path in chunked.items():
        files = [chunk_path(work, name, c.index) for c in chunks.chunks]
        await stitch(chunks, name, files, audio, path)
    return Encoded(media, plan, chunks, single, chunked, work)


@pytest.fixture(scope="module")
def encoded(footage: Path, tmp_path_factory: pytest.TempPathFactory) -> Encoded:
    return asyncio.run(encode_both(footage, tmp_path_factory.mktemp("encoded"), RUNGS))


def streams(path: Path) -> list[dict[str, Any]]:
    facts = ffprobe(path, "-show_entries", "stream=codec_type,duration_ts,nb_frames,start_pts")
    return list(facts["streams"])


def audio_md5(path: Path) -> str:
    done = subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(path), "-map", "0:a", "-c", "copy", "-f", "md5", "-"],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return done.stdout.strip()


async def test_the_plan_has_several_boundaries_off_the_source_keyframes(encoded: Encoded) -> None:
    starts = [c.start_frame for c in encoded.chunks.chunks]
    assert starts == [0, 100, 200, 300, 400]  # 4 s chunks of two 2 s GOPs; the source's are 3 s


async def test_stitched_renditions_pass_the_gate_and_match_the_single_pass(
    encoded: Encoded,
) -> None:
    for target in encoded.plan.targets:
        chunked, single = encoded.chunked[target.name], encoded.single[target.name]
        facts = {p: await probe.run(str(p), timeout_s=60) for p in (chunked, single)}
        gated = {p: verify.check(p, facts[p], target, encoded.media, encoded.plan) for p in facts}
        assert gated[chunked].frames == gated[single].frames == 500
        # Frame count and each stream's exact duration (in its own timescale) are the single
        # pass's; the container's duration (milliseconds) may round 1 ms apart.
        assert streams(chunked) == streams(single)
        assert abs(gated[chunked].duration_s - gated[single].duration_s) <= 0.001
        # The audio is the single pass's, packet for packet: encoded once, so no seams.
        assert audio_md5(chunked) == audio_md5(single)


async def test_the_seams_are_invisible_in_the_timestamps_and_the_gop_grid(
    encoded: Encoded,
) -> None:
    for name, path in encoded.chunked.items():
        stitched = timeline(await probe_packets(path), encoded.chunks.rate)
        single = timeline(await probe_packets(encoded.single[name]), encoded.chunks.rate)
        assert stitched.problems == single.problems == ()
        assert stitched.keyframes == single.keyframes == tuple(range(0, 500, 50))


async def test_a_chunk_placed_a_frame_late_is_caught_as_a_gap(encoded: Encoded) -> None:
    # The check runs on what ffprobe reads back: a concat script that offsets chunk 2 by one
    # frame too many makes a real file with a one-frame hole at 8 s.
    files = [chunk_path(encoded.work, "360p", c.index) for c in encoded.chunks.chunks]
    script = encoded.work / "late.ffconcat"
    text = concat_list(encoded.chunks, files)
    script.write_text(text.replace("duration 4000000us", "duration 4040000us", 2))
    broken = encoded.work / "late.mp4"
    await encoder.run(stitch_args(script, None, broken), Progress())
    with pytest.raises(OutputInvalid, match=r"timestamp gap: no frame at 4\.000s.*8\.040s"):
        check_stitched("360p", await probe_packets(broken), encoded.chunks, 500)


def lossless(args: list[str]) -> list[str]:
    """The same command with x264 made lossless (QP 0, High 4:4:4): decoded frames then show
    exactly which picture the filters chose for every output frame."""
    rewritten: list[str] = []
    pending = iter(args)
    for arg in pending:
        if arg.startswith(("-crf", "-maxrate", "-bufsize")):
            value = next(pending)
            rewritten += ["-qp" + arg.removeprefix("-crf"), "0"] if arg.startswith("-crf") else []
            del value
        elif arg == "-profile:v":
            next(pending)
            rewritten += [arg, "high444"]
        else:
            rewritten.append(arg)
    return rewritten


def frame_hashes(path: Path) -> list[str]:
    done = subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(path), "-map", "0:v", "-f", "framemd5", "-"],
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return [line.rsplit(",", 1)[1].strip() for line in done.stdout.splitlines() if line[:1] != "#"]


@pytest.mark.parametrize(
    ("clip", "postroll", "warmup"),
    [("footage", 0, 0), ("vfr_footage", 0, 0), ("footage", 6, 0), ("vfr_footage", 6, 12)],
    ids=["cfr", "vfr", "cfr-postroll-6", "vfr-postroll-6-warmup-12"],
)
async def test_every_chunked_frame_is_the_picture_the_single_pass_shows(
    clip: str, postroll: int, warmup: int, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    source: Path = request.getfixturevalue(clip)
    both = await encode_both(source, tmp_path, TINY, lossless, postroll, warmup)
    single, chunked = frame_hashes(both.single["180p"]), frame_hashes(both.chunked["180p"])
    assert len(single) == len(chunked) == 500  # the VFR clip is made 25 fps by the plan
    assert [i for i, (a, b) in enumerate(zip(single, chunked, strict=True)) if a != b] == []
    # The chunk files hold the post-roll (and the warm-up, but the first chunk has none); the
    # stitch cut them at each IDR.
    lines = [
        timeline(await probe_packets(chunk_path(tmp_path, "180p", i)), both.chunks.rate)
        for i in (0, 1)
    ]
    assert [line.frames for line in lines] == [100 + postroll, 100 + warmup + postroll]
    # The file's first frame is an IDR; with a warm-up, the IDR forced at the chunk's first kept
    # frame and the 2 s grid from there (the post-roll's IDR included).
    assert lines[1].keyframes == tuple(sorted({0, *range(warmup, lines[1].frames, 50)}))
    stitched = timeline(await probe_packets(both.chunked["180p"]), both.chunks.rate)
    assert (stitched.problems, stitched.keyframes) == ((), tuple(range(0, 500, 50)))
    path, target = both.chunked["180p"], both.plan.targets[0]
    facts = await probe.run(str(path), timeout_s=60)
    assert verify.check(path, facts, target, both.media, both.plan).frames == 500
