"""Deriving HLS and stills from finished renditions: the two command lines (by equality, against
the single pass's own options), the progress they report as one stage, and the shell's plan and
failure handling with ``encoder.run`` replaced (no ffmpeg here: tests/e2e/test_derive_real.py).
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
from pathlib import Path

import pytest
from media_facts import media

from transcoder.domain.errors import FfmpegFailed, InputRejected
from transcoder.domain.job import Reason
from transcoder.media import derive, encoder, hls, stills
from transcoder.media.ffmpeg import EncodeOptions, ProgressSample, build_args
from transcoder.media.ladder import Plan, Target
from transcoder.media.progress import Progress

T360 = Target("360p", 640, 360, 21, 1500, 3000)
T720 = Target("720p", 1280, 720, 21, 4500, 9000)
PLAN = Plan((T360, T720), (), 0, 1, None, 50, deinterlace=False)
SILENT = dataclasses.replace(PLAN, audio_index=None)
OUTPUTS = {"360p": Path("/s/360p.mp4"), "720p": Path("/s/720p.mp4")}
SOURCE = media(duration_s=5.312, video_duration_s=5.3, audio_duration_s=5.312, fps=25.0)
GLOBAL = ["-nostdin", "-hide_banner", "-loglevel", "error", "-progress", "pipe:1", "-nostats"]


def hls_output() -> hls.HlsOutput:
    return hls.HlsOutput(Path("/s/hls"), hls.hls_time_s(PLAN, 25.0))


# --- HLS by stream copy -------------------------------------------------------------------------


def copied(index: int, name: str, *, audio: bool = True) -> list[str]:
    streams = ["-map", f"{index}:v:0", *(["-map", f"{index}:a:0"] if audio else [])]
    return [
        *streams,
        *("-f", "hls", "-c", "copy"),
        *("-hls_fmp4_init_filename", "init.mp4", "-hls_playlist_type", "vod"),
        *("-hls_segment_filename", f"/s/hls/{name}/seg_%05d.m4s", "-hls_segment_type", "fmp4"),
        *("-hls_time", "1.980000", "-map_chapters", "-1", "-map_metadata", "-1"),
        f"/s/hls/{name}/index.m3u8",
    ]


def test_one_ffmpeg_copies_every_rendition_mp4_into_its_hls_stream_with_its_audio() -> None:
    args = derive.hls_args(PLAN, OUTPUTS, hls_output())

    assert args == [
        *("ffmpeg", "-i", "/s/360p.mp4", "-i", "/s/720p.mp4"),
        *copied(0, "360p"),
        *copied(1, "720p"),
        *GLOBAL,
        "-y",
    ]
    assert "-filter_complex" not in args and "libx264" not in args  # nothing is encoded


def test_a_silent_plan_copies_video_only() -> None:
    args = derive.hls_args(SILENT, OUTPUTS, hls_output(), binary="/opt/ffmpeg")

    assert args[0] == "/opt/ffmpeg"
    assert args[5 : 5 + len(copied(0, "360p", audio=False))] == copied(0, "360p", audio=False)
    assert not [arg for arg in args if ":a:" in arg]


@pytest.mark.parametrize("plan", [PLAN, SILENT])
def test_the_copy_gives_each_hls_muxer_the_tee_slaves_options_and_stream_set(plan: Plan) -> None:
    """What the single pass's tee gives each rendition's hls muxer, the copy gives it too."""
    output = hls_output()
    tee = build_args("/in.mp4", plan, OUTPUTS, EncodeOptions(), hls_output=output)
    slaves = [s for s in tee[tee.index("-nostdin") - 1].split("|") if s.startswith("[f=hls")]
    args = derive.hls_args(plan, OUTPUTS, output)

    start = 1 + 2 * len(plan.targets)  # after the inputs
    for index, slave in enumerate(slaves):
        options, playlist = slave.removeprefix("[").split("]")
        # key=value:key=value; a value that may hold ':' is quoted for the tee
        pairs = re.findall(r"(\w+)=(?:\\'(.*?)\\'|([^:]*))", options)
        wanted = {key: quoted or plain for key, quoted, plain in pairs}
        del wanted["f"]
        selected = wanted.pop("select").split(",")
        end = args.index(playlist)
        mine = args[start:end]
        flags = {mine[i][1:]: mine[i + 1] for i in range(len(mine)) if mine[i].startswith("-hls")}
        maps = [mine[i + 1] for i in range(len(mine)) if mine[i] == "-map"]
        assert flags == wanted
        assert maps == [f"{index}:{kind[0]}:0" for kind in selected]  # v:i -> its video; a
        start = end + 1


# --- stills from one rendition ------------------------------------------------------------------


def test_the_stills_are_the_single_pass_branches_fed_by_one_decode_of_one_rendition() -> None:
    made = stills.plan(5.312, PLAN, 0.1, Path("/s"))

    args = derive.stills_args(PLAN, made, Path("/s/360p.mp4"))

    assert args[:3] == ["ffmpeg", "-i", "/s/360p.mp4"] and args.count("-i") == 1
    graph = args[args.index("-filter_complex") + 1]
    assert graph.startswith("[0:v:0]split=3[s0][s1][s2];[s1]select=gte(t\\,selected_n*1)")
    # the single pass's poster and sprite chains, at the planned sizes (scaled from 640x360)
    single = build_args("/in.mp4", PLAN, OUTPUTS, EncodeOptions(), stills=made)
    single_graph = single[single.index("-filter_complex") + 1]
    assert chains(graph) == chains(single_graph)
    assert "scale=1280:720" in graph and "scale=160:90" in graph
    image = ["-f", "image2", "-c:v", "mjpeg", "-fps_mode", "passthrough"]
    assert args[args.index("-filter_complex") + 2 :] == [
        # first: every decoded frame, so -progress advances while the video is read
        *("-map", "[s0]", "-f", "null", "-"),
        *("-map", "[s21]", *image, "-q:v", "3", "-update", "1", "/s/poster.jpg"),
        *("-map", "[s33]", *image, "-q:v", "5", "-update", "1", "/s/sprite.jpg"),
        *GLOBAL,
        "-y",
    ]


def test_keyframes_only_skips_every_other_frame_in_the_decoder() -> None:
    made = stills.plan(600.0, PLAN, 0.1, Path("/s"))

    args = derive.stills_args(PLAN, made, Path("/s/360p.mp4"), keyframes_only=True)

    assert args[:5] == ["ffmpeg", "-skip_frame", "nokey", "-i", "/s/360p.mp4"]
    assert args[5:] == derive.stills_args(PLAN, made, Path("/s/360p.mp4"))[3:]


@pytest.mark.parametrize(
    ("duration_s", "gop_s", "video_s", "suffice"),
    [
        (60.0, 2.0, 59.9, False),  # 1 s tiles: half the cues hold no keyframe
        (150.0, 2.0, 149.9, True),  # 2 s tiles, a keyframe at each cue's start
        (150.0, 2.002, 149.9, False),  # 29.97 fps: 2 s cues drift past the keyframes
        (245.0, 2.002, 244.9, True),  # 3 s cues: each holds a keyframe
        (101.0, 2.0, 100.9, True),  # the last cue 100-101 s: its keyframe at 100 s
        (245.0, 2.5, 244.9, False),  # the last cue, 243-245 s, has none (242.5, 245)
        (150.0, 2.0, 147.0, False),  # the video ends before the last cue's keyframe
    ],
)
def test_keyframes_suffice_when_every_cue_holds_one(
    duration_s: float, gop_s: float, video_s: float, suffice: bool
) -> None:
    made = stills.plan(duration_s, PLAN, 0.1, Path("/s"))
    assert derive.keyframes_suffice(made, gop_s, video_s) is suffice


def chains(graph: str) -> list[str]:
    """The stills' filters (from the first ``select`` on), without the link labels, which each
    graph numbers its own way."""
    filters = [re.sub(r"\[[^\]]*\]", "", part) for part in graph.split(";")]
    return filters[next(i for i, f in enumerate(filters) if f.startswith("select=")) :]


def test_the_smallest_rendition_is_the_one_with_the_fewest_pixels() -> None:
    portrait = Target("480p", 480, 854, 21, 2000, 4000)
    assert derive.smallest(PLAN) == T360
    assert derive.smallest(dataclasses.replace(PLAN, targets=(T720, portrait))) == portrait


# --- progress: several ffmpegs as one stage -----------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def sample(frame: int, out_time_s: float, *, done: bool = False) -> ProgressSample:
    return ProgressSample(frame=frame, out_time_s=out_time_s, speed=2.0, done=done)


def test_the_job_advances_when_the_slowest_ffmpeg_does_and_stalls_when_it_stops() -> None:
    clock = Clock()
    job = Progress(duration_s=10.0, clock=clock)
    job.enter("transcode")
    job.frame, job.out_time_s = 250, 10.0  # what the stitch (an earlier run) left: not a floor
    copy, decode = derive._Relay(job, 2).parts

    clock.now = 101
    copy.update(sample(250, 10.0, done=True))  # the copy is done at once
    assert (job.frame, job.out_time_s, job.last_advance) == (250, 10.0, 100)  # decode: at 0
    clock.now = 102
    decode.update(sample(50, 2.0))
    assert (job.frame, job.out_time_s, job.last_advance) == (50, 2.0, 102)
    assert job.percent == 18
    clock.now = 200
    decode.update(sample(50, 2.0))  # the decode stops: the stall clock is not restarted
    assert job.last_advance == 102 and job.stalled_for_s() == 98
    clock.now = 201
    decode.update(sample(250, 10.0, done=True))
    assert (job.frame, job.out_time_s, job.last_advance) == (250, 10.0, 201)


def test_a_stalled_copy_is_seen_once_the_decode_has_passed_it() -> None:
    clock = Clock()
    job = Progress(duration_s=10.0, clock=clock)
    job.enter("transcode")
    copy, decode = derive._Relay(job, 2).parts
    copy.update(sample(100, 4.0))
    clock.now = 110
    decode.update(sample(50, 2.0))
    assert job.last_advance == 110
    clock.now = 120
    decode.update(sample(200, 8.0))  # the copy, stuck at 4 s, is now the slowest
    assert (job.out_time_s, job.last_advance) == (4.0, 120)
    clock.now = 130
    decode.update(sample(250, 10.0, done=True))
    assert job.last_advance == 120


# --- the shell ----------------------------------------------------------------------------------


@pytest.fixture
def ran(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """``encoder.run`` replaced: records each command and reports it finished."""
    commands: list[list[str]] = []

    async def run(args: list[str], progress: Progress) -> None:
        commands.append(args)
        await asyncio.sleep(0)
        progress.update(sample(132, 5.28, done=True))

    monkeypatch.setattr(encoder, "run", run)
    return commands


async def test_derive_plans_both_as_the_single_pass_does_and_writes_the_vtt(
    ran: list[list[str]], tmp_path: Path
) -> None:
    outputs = {name: tmp_path / f"{name}.mp4" for name in ("360p", "720p")}
    job = Progress(duration_s=SOURCE.duration_s)

    hls_output, made = await derive.derive(
        PLAN, SOURCE, outputs, tmp_path, hls=True, stills=True, progress=job
    )

    assert hls_output == hls.HlsOutput(tmp_path / "hls", hls.hls_time_s(PLAN, SOURCE.fps))
    assert made == stills.plan(SOURCE.duration_s, PLAN, 0.1, tmp_path)
    assert all((tmp_path / "hls" / target.name).is_dir() for target in PLAN.targets)
    assert ran == [
        derive.hls_args(PLAN, outputs, hls_output),
        derive.stills_args(PLAN, made, outputs["360p"]),  # the smallest, in full: 1 s tiles
    ]
    assert made.files.vtt.read_text() == stills.vtt_text(made)
    assert (job.frame, job.out_time_s) == (132, 5.28)


async def test_a_long_video_s_stills_are_decoded_from_keyframes(
    ran: list[list[str]], tmp_path: Path
) -> None:
    long = dataclasses.replace(SOURCE, duration_s=600.0, video_duration_s=600.0)
    outputs = {name: tmp_path / f"{name}.mp4" for name in ("360p", "720p")}

    _, made = await derive.derive(
        PLAN, long, outputs, tmp_path, hls=False, stills=True, progress=Progress()
    )

    assert made is not None and made.interval_s == 10
    assert ran == [derive.stills_args(PLAN, made, outputs["360p"], keyframes_only=True)]


async def test_derive_runs_only_what_is_asked(ran: list[list[str]], tmp_path: Path) -> None:
    outputs = {name: tmp_path / f"{name}.mp4" for name in ("360p", "720p")}
    job = Progress()

    assert await derive.derive(
        PLAN, SOURCE, outputs, tmp_path, hls=False, stills=False, progress=job
    ) == (None, None)
    hls_output, made = await derive.derive(
        PLAN, SOURCE, outputs, tmp_path, hls=True, stills=False, progress=job
    )
    assert hls_output is not None and made is None
    assert len(ran) == 1 and not (tmp_path / stills.VTT_NAME).exists()


async def test_a_failure_stops_the_other_ffmpeg_and_is_never_a_verdict_on_the_upload(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    cancelled = asyncio.Event()

    async def run(args: list[str], progress: Progress) -> None:
        if "hls" in args:
            await asyncio.sleep(0)
            raise InputRejected("truncated: moov atom not found", reason=Reason.TRUNCATED)
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:  # encoder.run kills its ffmpeg here
            cancelled.set()
            raise

    monkeypatch.setattr(encoder, "run", run)
    outputs = {name: tmp_path / f"{name}.mp4" for name in ("360p", "720p")}

    with pytest.raises(FfmpegFailed, match="moov atom not found") as raised:
        await derive.derive(
            PLAN, SOURCE, outputs, tmp_path, hls=True, stills=True, progress=Progress()
        )
    assert raised.value.retryable and raised.value.reason is Reason.FFMPEG_FAILED
    assert cancelled.is_set()
    assert not (tmp_path / stills.VTT_NAME).exists()


async def test_other_failures_are_raised_as_they_are(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    full = FfmpegFailed("No space left on device", reason=Reason.SCRATCH_FULL)

    async def run(args: list[str], progress: Progress) -> None:
        raise full

    monkeypatch.setattr(encoder, "run", run)
    with pytest.raises(FfmpegFailed) as raised:
        await derive.derive(
            PLAN, SOURCE, OUTPUTS, tmp_path, hls=True, stills=False, progress=Progress()
        )
    assert raised.value is full
