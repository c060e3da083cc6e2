"""Poster and thumbnails: interval choice, tile geometry, the WebVTT index, the ffmpeg branches and
the stills part of the publish gate (pure; the JPEGs are header-only stand-ins, no ffmpeg)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from transcoder.domain.errors import OutputInvalid
from transcoder.media import stills
from transcoder.media.ffmpeg import EncodeOptions, build_args
from transcoder.media.ladder import Plan, Target

ROOT = Path(__file__).resolve().parents[2]
T720 = Target("720p", 1280, 720, 23, 4500, 9000)
T1080 = Target("1080p", 1920, 1080, 23, 7800, 15600)
PORTRAIT = Target("720p", 720, 1280, 23, 4500, 9000)


def ladder_plan(*targets: Target) -> Plan:
    return Plan(targets, (), 0, 1, None, 50, deinterlace=False)


def fake_jpeg(width: int, height: int, *, complete: bool = True) -> bytes:
    """SOI, an APP0 segment, a baseline frame header with the size, EOI: what the gate reads."""
    app0 = b"\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
    sof0 = b"\xff\xc0\x00\x11\x08" + height.to_bytes(2, "big") + width.to_bytes(2, "big")
    sof0 += b"\x03\x01\x22\x00\x02\x11\x01\x03\x11\x01"
    return b"\xff\xd8" + app0 + sof0 + (b"\xff\xd9" if complete else b"\x00\x00")


# --- what to make -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("duration_s", "interval_s"),
    [(0.4, 1), (5.3, 1), (100, 1), (100.5, 2), (600, 10), (3600, 45), (14_400, 180)],
)
def test_the_interval_is_the_shortest_that_keeps_at_most_100_tiles(
    duration_s: float, interval_s: float
) -> None:
    assert stills.interval_for(duration_s) == interval_s


def test_a_long_video_still_has_a_bounded_number_of_tiles() -> None:
    for duration_s in (1.0, 59.9, 301.0, 3599.0, 14_400.0, 100_000.0):
        interval = stills.interval_for(duration_s)
        assert 1 <= stills.tile_count(duration_s, interval, 0.1) <= stills.MAX_TILES


@pytest.mark.parametrize(
    ("duration_s", "count"),
    [(2.0, 2), (2.05, 2), (2.5, 3), (0.3, 1), (5.312, 6)],
)
def test_one_tile_per_started_interval_but_not_for_a_tail_inside_the_tolerance(
    duration_s: float, count: int
) -> None:
    assert stills.tile_count(duration_s, 1.0, tolerance_s=0.1) == count


@pytest.mark.parametrize(
    ("count", "layout"), [(1, (1, 1)), (6, (6, 1)), (10, (10, 1)), (11, (10, 2)), (100, (10, 10))]
)
def test_the_grid_is_at_most_ten_tiles_wide(count: int, layout: tuple[int, int]) -> None:
    assert stills.grid(count) == layout


@pytest.mark.parametrize(
    ("picture", "tile"),
    [
        ((1920, 1080), (160, 90)),
        ((1080, 1920), (160, 284)),  # portrait stays portrait
        ((852, 480), (160, 90)),
        ((1024, 576), (160, 90)),
        ((160, 90), (160, 90)),
        ((120, 68), (120, 68)),  # never wider than the picture
    ],
)
def test_tiles_are_160_wide_with_the_output_aspect(
    picture: tuple[int, int], tile: tuple[int, int]
) -> None:
    assert stills.tile_size(*picture) == tile


def test_the_poster_is_at_the_top_renditions_size_and_candidates_spread_with_the_duration(
    tmp_path: Path,
) -> None:
    made = stills.plan(754.0, ladder_plan(T720, T1080), 0.1, tmp_path)
    assert (made.poster_width, made.poster_height) == (1920, 1080)
    assert (made.interval_s, made.count, made.columns, made.rows) == (10.0, 76, 10, 8)
    assert made.sprite_size == (1600, 720)
    assert made.candidate_s == 10.0  # capped: the window spans the first 100 s
    assert stills.plan(60.0, ladder_plan(T720), 0.1, tmp_path).candidate_s == 3.0
    assert stills.plan(2.0, ladder_plan(T720), 0.1, tmp_path).candidate_s == 1.0
    assert made.files.sprite == tmp_path / "sprite.jpg"


# --- the WebVTT index ---------------------------------------------------------------------------


def test_the_vtt_has_contiguous_cues_from_zero_to_the_duration_pointing_into_the_sprite(
    tmp_path: Path,
) -> None:
    made = stills.plan(12.34, ladder_plan(PORTRAIT), 0.1, tmp_path)

    text = stills.vtt_text(made)

    assert (made.count, made.columns, made.rows) == (13, 10, 2)
    assert text.startswith(
        "WEBVTT\n\n"
        "00:00:00.000 --> 00:00:01.000\nsprite.jpg#xywh=0,0,160,284\n\n"
        "00:00:01.000 --> 00:00:02.000\nsprite.jpg#xywh=160,0,160,284\n\n"
    )
    assert text.endswith(
        "00:00:09.000 --> 00:00:10.000\nsprite.jpg#xywh=1440,0,160,284\n\n"
        "00:00:10.000 --> 00:00:11.000\nsprite.jpg#xywh=0,284,160,284\n\n"
        "00:00:11.000 --> 00:00:12.000\nsprite.jpg#xywh=160,284,160,284\n\n"
        "00:00:12.000 --> 00:00:12.340\nsprite.jpg#xywh=320,284,160,284\n"
    )
    assert stills.parse_vtt(text) == stills.cues(made)


def test_hours_in_timestamps_and_vtt_parsing_rules() -> None:
    assert stills.timestamp(3725.5) == "01:02:05.500"
    assert stills.parse_timestamp("01:02:05.500") == 3725.5
    assert stills.parse_timestamp("02:05.500") == 125.5
    text = "\ufeffWEBVTT - index\r\n\r\nid-1\r\n00:00.000 --> 00:01.000 align:start\r\na.jpg\r\n"
    assert stills.parse_vtt(text) == [stills.Cue(0.0, 1.0, "a.jpg")]
    broken = {
        "": "missing the WEBVTT header",
        "WEBVT\n\n00:00.000 --> 00:01.000\nx": "missing the WEBVTT header",
        "WEBVTT\n\n00:00.0 --> 00:01.000\nx": "bad WebVTT timestamp",
        "WEBVTT\n\nid\nsprite.jpg": "cue without timings",
    }
    for text, problem in broken.items():
        with pytest.raises(ValueError, match=problem):
            stills.parse_vtt(text)


# --- the ffmpeg branches ------------------------------------------------------------------------


def test_the_stills_are_more_branches_and_outputs_of_the_same_ffmpeg(tmp_path: Path) -> None:
    plan = ladder_plan(T720)
    made = stills.plan(5.312, plan, 0.1, Path("/scratch"))

    args = build_args(
        "/in/a.mp4", plan, {"720p": Path("/scratch/720p.mp4")}, EncodeOptions(), stills=made
    )

    assert args.count("-i") == 1  # one decode
    graph = args[args.index("-filter_complex") + 1]
    assert graph == (
        "[0:0]split=3[s0][s1][s2];"
        "[s0]scale=1280:720[s3];[s3]setsar=1[s4];[s4]format=yuv420p[s5];"
        # poster candidates, one a second, at the top rendition's size
        "[s1]select=gte(t\\,selected_n*1)[s6];[s6]scale=1280:720[s7];[s7]setsar=1[s8];"
        "[s8]format=yuv420p[s9];[s9]split=3[s10][s11][s12];"
        "[s10]trim=end_frame=1[s13];"  # a placeholder at once: ffmpeg reports progress from then
        "[s11]thumbnail=n=10[s14];[s14]trim=end_frame=1[s15];"  # the best of the window, or
        # the best of the window that is neither near black nor flat
        "[s12]blackframe=amount=0:threshold=32[s16];"
        "[s16]metadata=function=less:key=lavfi.blackframe.pblack:mode=select:value=90[s17];"
        "[s17]entropy[s18];"
        "[s18]metadata=function=greater:key=lavfi.entropy.normalized_entropy.normal.Y"
        ":mode=select:value=0.3[s19];[s19]thumbnail=n=10[s20];[s20]trim=end_frame=1[s21];"
        # the last one written stays; JPEG's full range
        "[s13][s15][s21]concat=n=3[s22];[s22]format=yuvj420p[s23];[s23]setpts=N/TB[s24];"
        # one tile a second into a 6x1 sprite, after a placeholder of the sprite's size
        "[s2]select=gte(t\\,selected_n*1)[s25];[s25]scale=160:90[s26];[s26]setsar=1[s27];"
        "[s27]split=2[s28][s29];"
        "[s28]trim=end_frame=1[s30];[s30]pad=960:90:color=black[s31];"
        "[s29]tile=color=black:layout=6x1[s32];[s32]trim=end_frame=1[s33];"
        "[s31][s33]concat=n=2[s34];[s34]format=yuvj420p[s35];[s35]setpts=N/TB[s36]"
    )
    tee = next(i for i, arg in enumerate(args) if arg.startswith("[f=mp4"))
    assert args[args.index("-map") : args.index("-map") + 4] == ["-map", "[s5]", "-map", "0:1"]
    image = ["-f", "image2", "-c:v", "mjpeg", "-fps_mode", "passthrough"]
    assert args[tee + 1 : args.index("-nostdin")] == [
        *("-map", "[s24]", *image, "-q:v", "3", "-update", "1", "/scratch/poster.jpg"),
        *("-map", "[s36]", *image, "-q:v", "5", "-update", "1", "/scratch/sprite.jpg"),
    ]  # after the renditions' tee output, so -progress reports the encode


def test_without_stills_the_command_is_unchanged() -> None:
    plan = ladder_plan(T720)
    args = build_args("/in/a.mp4", plan, {"720p": Path("/s/720p.mp4")}, EncodeOptions())
    assert not [arg for arg in args if arg.endswith(".jpg")]
    assert args[args.index("-filter_complex") + 1].startswith("[0:0]scale=1280:720")


def test_the_image_ffmpeg_has_every_filter_encoder_and_muxer_the_stills_use() -> None:
    script = (ROOT / "container" / "ffmpeg-configure.sh").read_text().replace("\\\n", "")

    def enabled(kind: str) -> set[str]:
        found = re.search(rf"^{kind}=(\S+)", script, re.MULTILINE)
        assert found, kind
        return set(found.group(1).split(","))

    plan = ladder_plan(T720, T1080)
    made = stills.plan(5.0, plan, 0.1, Path("/s"))
    args = build_args(
        "/in/a.mp4", plan, {"720p": Path("/a"), "1080p": Path("/b")}, EncodeOptions(), stills=made
    )
    graph = args[args.index("-filter_complex") + 1]
    used = set(re.findall(r"\](\w+)", graph))
    assert used <= enabled("FILTERS"), used - enabled("FILTERS")
    assert {"mjpeg"} <= enabled("ENCODERS")
    assert {"image2"} <= enabled("MUXERS")


# --- the publish gate ---------------------------------------------------------------------------


@pytest.fixture
def made(tmp_path: Path) -> stills.Stills:
    """A 5.3 s 720p job whose stills are all as planned."""
    plan = stills.plan(5.3, ladder_plan(T720), 0.1, tmp_path)
    plan.files.poster.write_bytes(fake_jpeg(1280, 720))
    plan.files.sprite.write_bytes(fake_jpeg(960, 90))
    plan.files.vtt.write_text(stills.vtt_text(plan))
    return plan


def test_planned_stills_pass_the_gate(made: stills.Stills) -> None:
    stills.check(made, tolerance_s=0.1)
    assert stills.jpeg_size(made.files.poster.read_bytes()) == (1280, 720)


@pytest.mark.parametrize(
    ("damage", "problem"),
    [
        (lambda f: f.poster.unlink(), "no poster was written"),
        (lambda f: f.poster.write_bytes(fake_jpeg(720, 1280)), "poster is 720x1280"),
        (lambda f: f.poster.write_bytes(fake_jpeg(1280, 720, complete=False)), "not a complete"),
        (lambda f: f.poster.write_bytes(b"GIF89a"), "poster is not a complete JPEG"),
        (lambda f: f.sprite.write_bytes(fake_jpeg(800, 90)), "sprite is 800x90, expected 960x90"),
        (lambda f: f.sprite.unlink(), "no sprite was written"),
        (lambda f: f.vtt.unlink(), "thumbnails VTT unreadable"),
        (lambda f: f.vtt.write_text("00:00.000 --> 00:01.000\n"), "missing the WEBVTT header"),
    ],
)
def test_missing_or_wrong_images_fail_the_gate(
    made: stills.Stills, damage: object, problem: str
) -> None:
    damage(made.files)  # type: ignore[operator]
    with pytest.raises(OutputInvalid, match=re.escape(problem)):
        stills.check(made, tolerance_s=0.1)


def write_cues(made: stills.Stills, cues: list[stills.Cue]) -> None:
    blocks = [
        f"{stills.timestamp(c.start_s)} --> {stills.timestamp(c.end_s)}\n{c.payload}" for c in cues
    ]
    made.files.vtt.write_text("WEBVTT\n\n" + "\n\n".join(blocks) + "\n")


def test_a_vtt_with_a_gap_a_short_end_or_a_tile_outside_the_sprite_fails(
    made: stills.Stills,
) -> None:
    good = stills.cues(made)
    gap = [*good[:2], stills.Cue(2.5, 3.0, good[2].payload), *good[3:]]
    short = [*good[:-1], stills.Cue(good[-1].start_s, 5.1, good[-1].payload)]
    outside = [*good[:-1], stills.Cue(good[-1].start_s, 5.3, "sprite.jpg#xywh=900,0,160,90")]
    other = [*good[:-1], stills.Cue(good[-1].start_s, 5.3, "other.jpg#xywh=0,0,160,90")]
    cases = [
        (gap, "cue 2 spans 2.500-3.000s (a gap)"),
        (short, "cues end at 5.100s, not 5.300s"),
        (outside, "cue 5 points at 'sprite.jpg#xywh=900,0,160,90', not inside the sprite"),
        (other, "not inside the sprite"),
        (good[:-1], "5 cues, expected 6"),
    ]
    for cues, problem in cases:
        write_cues(made, cues)
        with pytest.raises(OutputInvalid, match=re.escape(problem)):
            stills.check(made, tolerance_s=0.1)
    write_cues(made, [*good[:-1], stills.Cue(good[-1].start_s, 5.35, good[-1].payload)])
    stills.check(made, tolerance_s=0.1)  # within the MP4 gate's tolerance
