"""Chunked encoding's pure core: the chunk plan, the chunk/audio/stitch command lines, the seam
checks. Equality on whole values; the real ffmpeg runs are in tests/e2e/test_chunks.py."""

from __future__ import annotations

import itertools
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from media_facts import media

from transcoder.domain.errors import OutputInvalid
from transcoder.domain.rungs import DEFAULT_LADDER
from transcoder.media.chunks import (
    Chunk,
    ChunkPlan,
    audio_args,
    chunk_args,
    concat_list,
    output_rate,
    plan_chunks,
    stitch_args,
)
from transcoder.media.ffmpeg import EncodeOptions
from transcoder.media.ladder import Plan, plan
from transcoder.media.probe import MediaInfo
from transcoder.media.stitch import Timeline, check_chunks, check_stitched, cut_us, timeline

BOTH = ("720p", "1080p")


def ladder_plan(source: MediaInfo) -> Plan:
    return plan(source, DEFAULT_LADDER, BOTH, max_fps=60, gop_s=2)


def chunk_plan(source: MediaInfo, chunk_s: float) -> ChunkPlan:
    return plan_chunks(source, ladder_plan(source), chunk_s)


def bare(source: MediaInfo, ladder_: Plan, chunk_s: float) -> ChunkPlan:
    """Chunks with neither post-roll nor warm-up: the encode is exactly the chunk's frames."""
    return plan_chunks(source, ladder_, chunk_s, postroll_frames=0, warmup_frames=0)


def test_a_25_fps_source_is_cut_every_three_gops_and_the_last_chunk_runs_to_the_end() -> None:
    # 30 s at 25 fps, 2 s GOPs (50 frames), 6 s chunks: 150 frames, boundaries on the GOP grid.
    assert chunk_plan(media(duration_s=30.0, video_duration_s=30.0), 6) == ChunkPlan(
        rate=Fraction(25),
        keyint=50,
        expected_frames=750,
        chunks=(
            Chunk(0, 0, 150),
            Chunk(1, 150, 300),
            Chunk(2, 300, 450),
            Chunk(3, 450, 600),
            Chunk(4, 600, None),
        ),
    )


def test_a_short_last_chunk_is_kept_when_it_holds_a_gop_and_merged_when_it_does_not() -> None:
    # 25.04 s = 626 frames: the tail after 600 is 26 frames (< one GOP) and joins the chunk before.
    merged = chunk_plan(media(duration_s=25.04, video_duration_s=25.04), 6)
    assert merged.chunks[-2:] == (Chunk(2, 300, 450), Chunk(3, 450, None))
    # 26 s = 650 frames: the tail after 600 is exactly one GOP: a short last chunk of its own.
    kept = chunk_plan(media(duration_s=26.0, video_duration_s=26.0), 6)
    assert kept.chunks[-2:] == (Chunk(3, 450, 600), Chunk(4, 600, None))


def test_a_vfr_source_is_cut_on_the_constant_rate_its_fps_filter_makes() -> None:
    # 30 -> 10 -> 30 fps: average 20, base (r_frame_rate) 30. The plan resamples to 30 fps, so
    # the frame timeline is 30 fps whatever the source's pace: 12 s = 360 output frames.
    vfr = media(fps=20.0, base_fps=30.0, duration_s=12.0, video_duration_s=12.0)
    assert ladder_plan(vfr).output_fps == 30.0
    assert chunk_plan(vfr, 4) == ChunkPlan(
        rate=Fraction(30),
        keyint=60,
        expected_frames=360,
        chunks=(Chunk(0, 0, 120), Chunk(1, 120, 240), Chunk(2, 240, None)),
    )


def test_the_rate_is_the_fps_filter_text_of_the_single_pass_or_the_exact_source_rate() -> None:
    ntsc = media(fps=30000 / 1001, base_fps=30000 / 1001)
    assert output_rate(ladder_plan(ntsc), ntsc) == Fraction(30000, 1001)
    # 119.88 fps is capped to 59.94006: the single pass hands fps the text "59.9401" (six
    # significant digits), so that is the rate both have.
    fast = media(fps=120000 / 1001, base_fps=120000 / 1001)
    assert output_rate(ladder_plan(fast), fast) == Fraction(599401, 10000)


def test_chunk_length_rounds_to_whole_gops_and_a_short_source_is_one_chunk() -> None:
    assert chunk_plan(media(duration_s=60.0), 5).chunks[1] == Chunk(1, 150, 300)  # 2.5 -> 3 GOPs
    assert chunk_plan(media(duration_s=60.0), 0.5).chunks[1] == Chunk(1, 50, 100)  # at least 1
    assert chunk_plan(media(duration_s=3.0), 6).chunks == (Chunk(0, 0, None),)


@given(
    duration_s=st.floats(min_value=0.1, max_value=7200),
    fps=st.sampled_from([23.976, 24.0, 25.0, 29.97, 30.0, 50.0, 59.94, 60.0]),
    chunk_s=st.floats(min_value=1, max_value=60),
)
def test_any_chunk_plan_tiles_the_timeline_on_the_gop_grid(
    duration_s: float, fps: float, chunk_s: float
) -> None:
    plan_ = chunk_plan(media(duration_s=duration_s, fps=fps, base_fps=fps), chunk_s)
    starts = [c.start_frame for c in plan_.chunks]
    assert starts[0] == 0
    assert all(s % plan_.keyint == 0 for s in starts)
    assert all(a.end_frame == b.start_frame for a, b in itertools.pairwise(plan_.chunks))
    assert plan_.chunks[-1].end_frame is None
    assert [c.index for c in plan_.chunks] == list(range(len(plan_.chunks)))
    # No closed chunk reaches into the last GOP the container promises.
    closed = [c.end_frame or 0 for c in plan_.chunks[:-1]]
    assert all(end <= plan_.expected_frames - plan_.keyint for end in closed)


def test_a_chunk_seeks_before_its_boundary_keeps_timestamps_and_trims_by_frame_index() -> None:
    source = media(duration_s=30.0, video_duration_s=30.0)
    ladder_ = ladder_plan(source)
    chunks = bare(source, ladder_, 6)
    outputs = {"720p": Path("/w/720p/00001.mp4"), "1080p": Path("/w/1080p/00001.mp4")}
    args = chunk_args("in.mp4", ladder_, chunks, chunks.chunks[1], outputs, EncodeOptions())
    assert args[:6] == ["ffmpeg", "-noaccurate_seek", "-ss", "5.000000", "-i", "in.mp4"]
    graph = args[args.index("-filter_complex") + 1]
    # The source's own constant rate made exact, then frames 150..299 restarted at 0, then the
    # single pass's split/scale per rendition.
    assert graph.startswith(
        "[0:0]fps=fps=25/1[s0];[s0]trim=end_pts=300:start_pts=150[s1];[s1]setpts=PTS-150[s2];"
        "[s2]split=2[s3][s4];[s3]scale=1280:720[s5]"
    )
    assert args[-1] == "-y"
    assert {"-copyts", "-start_at_zero"} <= set(args)
    assert "-c:a" not in args  # video only: the audio is encoded once, apart
    assert args[args.index("-f") + 1] == "tee"
    assert args[args.index("-g") + 1] == "50"
    assert args[args.index("-crf:v:1") + 1] == "21"
    assert next(a for a in args if a.startswith("[f=mp4")) == (
        "[f=mp4:select=\\'v:0\\']/w/720p/00001.mp4|[f=mp4:select=\\'v:1\\']/w/1080p/00001.mp4"
    )


def test_the_first_chunk_does_not_seek_and_the_last_has_no_end() -> None:
    source = media(duration_s=30.0, video_duration_s=30.0)
    ladder_ = ladder_plan(source)
    chunks = bare(source, ladder_, 6)
    outputs = {"720p": Path("a.mp4"), "1080p": Path("b.mp4")}
    first = chunk_args("in.mp4", ladder_, chunks, chunks.chunks[0], outputs, EncodeOptions())
    last = chunk_args("in.mp4", ladder_, chunks, chunks.chunks[-1], outputs, EncodeOptions())
    assert "-ss" not in first
    assert "trim=end_pts=150:start_pts=0" in first[first.index("-filter_complex") + 1]
    assert "trim=start_pts=600[s1]" in last[last.index("-filter_complex") + 1]


def test_a_vfr_chunk_reuses_the_plan_fps_filter_and_adds_none() -> None:
    vfr = media(fps=20.0, base_fps=30.0, duration_s=12.0, video_duration_s=12.0)
    ladder_ = ladder_plan(vfr)
    chunks = bare(vfr, ladder_, 4)
    outputs = {"720p": Path("a.mp4"), "1080p": Path("b.mp4")}
    args = chunk_args("in.mp4", ladder_, chunks, chunks.chunks[1], outputs, EncodeOptions())
    graph = args[args.index("-filter_complex") + 1]
    assert graph.startswith("[0:0]fps=fps=30[s0];[s0]trim=end_pts=240:start_pts=120[s1];")
    assert graph.count("fps=fps") == 1


def test_audio_is_encoded_once_as_the_single_pass_does() -> None:
    ladder_ = ladder_plan(media())
    args = audio_args("in.mp4", ladder_, Path("audio.m4a"), EncodeOptions(audio_bitrate_kbps=96))
    assert args[:4] == ["ffmpeg", "-i", "in.mp4", "-map"]
    assert args[args.index("-map") + 1] == "0:1"
    assert [args[args.index(k) + 1] for k in ("-c:a", "-b:a", "-ac", "-f")] == [
        "aac",
        "96k",
        "2",
        "mp4",
    ]
    with pytest.raises(ValueError, match="no audio"):
        audio_args("in.mp4", ladder_plan(media(audio_index=None)), Path("a.m4a"), EncodeOptions())


def test_the_concat_script_gives_exact_cumulative_durations_so_rounding_never_accumulates() -> None:
    # 30000/1001 fps: 180-frame chunks last 6.006 s. Each duration is the difference of the
    # rounded cumulative offsets, so even 1000 chunks of a rate whose frames are not whole
    # microseconds add up to the exact total.
    ntsc = media(fps=30000 / 1001, base_fps=30000 / 1001, duration_s=20.0, video_duration_s=20.0)
    chunks = bare(ntsc, ladder_plan(ntsc), 6)
    paths = [Path(f"/w/720p/0000{i}.mp4") for i in range(len(chunks.chunks))]
    assert concat_list(chunks, paths) == (
        "ffconcat version 1.0\n"
        "file '/w/720p/00000.mp4'\nduration 6006000us\n"
        "file '/w/720p/00001.mp4'\nduration 6006000us\n"
        "file '/w/720p/00002.mp4'\n"
    )
    # 7 frames at 30000/1001 fps are 233566.67 us: rounding each duration alone would drift.
    odd = tuple(Chunk(i, 7 * i, 7 * i + 7) for i in range(1000))
    long_run = ChunkPlan(Fraction(30000, 1001), 7, 10**6, odd, postroll_frames=0, warmup_frames=0)
    text = concat_list(long_run, [Path("c.mp4")] * 1000)
    total = sum(int(line.split()[1][:-2]) for line in text.splitlines() if line.startswith("dur"))
    assert total == round(7_000 * 1_000_000 * Fraction(1001, 30000))


def test_a_path_with_a_quote_is_escaped_in_the_concat_script() -> None:
    chunks = ChunkPlan(Fraction(25), 50, 100, (Chunk(0, 0, None),))
    assert (
        concat_list(chunks, [Path("/w/it's.mp4")])
        == "ffconcat version 1.0\nfile '/w/it'\\''s.mp4'\n"
    )


def test_the_stitch_copies_the_bitstream_muxes_the_audio_and_writes_faststart() -> None:
    args = stitch_args(Path("/w/720p.ffconcat"), Path("/w/audio.m4a"), Path("/w/720p.mp4"))
    assert args == [
        "ffmpeg",
        *("-f", "concat", "-auto_convert", "0", "-safe", "0", "-i", "/w/720p.ffconcat"),
        *("-i", "/w/audio.m4a", "-map", "0:v:0", "-map", "1:a:0"),
        *("-f", "mp4", "-c", "copy", "-map_chapters", "-1", "-map_metadata", "-1"),
        *("-movflags", "+faststart", "/w/720p.mp4"),
        *("-nostdin", "-hide_banner", "-loglevel", "error", "-y"),
    ]
    silent = stitch_args(Path("/w/l.ffconcat"), None, Path("/w/o.mp4"))
    assert "1:a:0" not in silent


def packets(*pts: int, keys: tuple[int, ...] = (0,), step: int = 512) -> dict[str, Any]:
    """ffprobe JSON of a 25 fps MP4 video track (timescale 12800) in decode order."""
    return {
        "streams": [{"time_base": "1/12800", "width": 1280, "extradata_hash": "md5:x"}],
        "packets": [
            {"pts": p * step, "dts": (i - 2) * step, "flags": "K_" if p in keys else "__"}
            for i, p in enumerate(pts)
        ],
    }


def test_a_continuous_timeline_reads_as_frames_and_keyframes() -> None:
    # B-frame reordering (decode order 0 3 1 2 ...) is no gap: presentation times are sorted.
    line = timeline(packets(0, 3, 1, 2, 6, 4, 5, 7, keys=(0, 4)), Fraction(25))
    assert line == Timeline(frames=8, keyframes=(0, 4), problems=())


def test_a_lost_frame_a_doubled_frame_and_a_step_off_the_grid_are_named() -> None:
    assert timeline(packets(0, 1, 2, 4, 5), Fraction(25)).problems == (
        "timestamp gap: no frame at 0.120s",
    )
    assert timeline(packets(0, 1, 2, 2, 3), Fraction(25)).problems == (
        "timestamp overlap: two frames at 0.080s",
    )
    skewed = packets(0, 1, 2)
    skewed["packets"][2]["pts"] += 100
    assert timeline(skewed, Fraction(25)).problems == ("1 frames off the 25.000 fps grid",)
    backwards = packets(0, 1, 2)
    backwards["packets"][2]["dts"] = -1024
    assert timeline(backwards, Fraction(25)).problems == (
        "decode timestamps not increasing at 1 packets",
    )


def test_a_stitched_rendition_must_keep_the_gop_grid_and_every_chunk_frame() -> None:
    chunks = ChunkPlan(Fraction(25), 4, 12, (Chunk(0, 0, 4), Chunk(1, 4, 8), Chunk(2, 8, None)))
    good = packets(*range(12), keys=(0, 4, 8))
    assert check_stitched("720p", good, chunks, 12).keyframes == (0, 4, 8)
    with pytest.raises(OutputInvalid, match=r"keyframes off the 4-frame GOP grid \(extra at \[6\]"):
        check_stitched("720p", packets(*range(12), keys=(0, 4, 6, 8)), chunks, 12)
    with pytest.raises(OutputInvalid, match="11 frames, the chunks hold 12"):
        check_stitched("720p", packets(*range(11), keys=(0, 4, 8)), chunks, 12)


def test_a_chunk_short_of_its_planned_frames_or_with_other_parameters_is_refused() -> None:
    chunks = ChunkPlan(
        Fraction(25), 4, 12, (Chunk(0, 0, 4), Chunk(1, 4, 8), Chunk(2, 8, None)), 0, 0
    )
    whole = [packets(0, 1, 2, 3), packets(0, 1, 2, 3), packets(0, 1, 2)]
    assert check_chunks("720p", whole, chunks) == [4, 4, 3]
    short = [packets(0, 1, 2, 3), packets(0, 1, 2), packets(0, 1, 2)]
    with pytest.raises(OutputInvalid, match="chunk 1: 3 frames, planned 4"):
        check_chunks("720p", short, chunks)
    other = [packets(0, 1, 2, 3), packets(0, 1, 2, 3), packets(0, 1, 2)]
    other[2]["streams"][0]["extradata_hash"] = "md5:y"
    with pytest.raises(OutputInvalid, match="chunk 2: extradata_hash differ from chunk 0"):
        check_chunks("720p", other, chunks)


def test_a_post_roll_is_encoded_past_the_end_and_cut_at_the_boundary_idr() -> None:
    source = media(duration_s=30.0, video_duration_s=30.0)
    ladder_ = ladder_plan(source)
    chunks = plan_chunks(source, ladder_, 6, postroll_frames=6, warmup_frames=0)
    outputs = {"720p": Path("a.mp4"), "1080p": Path("b.mp4")}
    args = chunk_args("in.mp4", ladder_, chunks, chunks.chunks[1], outputs, EncodeOptions())
    assert "trim=end_pts=306:start_pts=150" in args[args.index("-filter_complex") + 1]
    last = chunk_args("in.mp4", ladder_, chunks, chunks.chunks[-1], outputs, EncodeOptions())
    assert "trim=start_pts=600[s1]" in last[last.index("-filter_complex") + 1]
    text = concat_list(
        chunks, [Path(f"{i}.mp4") for i in range(5)], [5920000, None, None, None, None]
    )
    assert text.splitlines()[1:4] == ["file '0.mp4'", "duration 6000000us", "outpoint 5920000us"]


def test_the_cut_is_the_decode_time_of_the_idr_that_opens_the_post_roll() -> None:
    chunks = ChunkPlan(
        Fraction(25), 4, 12, (Chunk(0, 0, 4), Chunk(1, 4, None)), postroll_frames=2, warmup_frames=0
    )
    encoded = packets(0, 1, 2, 3, 4, 5, keys=(0, 4))  # dts = (i - 2) frames
    assert cut_us(encoded, chunks, 4) == 80_000  # frame 4's dts: 2 frames = 0.08 s
    assert cut_us(encoded, chunks, None) is None  # the last chunk is not cut
    assert check_chunks("720p", [encoded, packets(0, 1, 2)], chunks) == [4, 3]
    with pytest.raises(OutputInvalid, match="chunk 0: 4 frames, planned 6"):
        check_chunks("720p", [packets(0, 1, 2, 3), packets(0, 1, 2)], chunks)


def test_a_warm_up_is_encoded_before_the_chunk_with_an_idr_forced_at_its_first_kept_frame() -> None:
    source = media(duration_s=30.0, video_duration_s=30.0)
    ladder_ = ladder_plan(source)
    chunks = plan_chunks(source, ladder_, 6, postroll_frames=6, warmup_frames=12)
    assert (chunks.warmup(chunks.chunks[0]), chunks.warmup(chunks.chunks[1])) == (0, 12)
    outputs = {"720p": Path("a.mp4"), "1080p": Path("b.mp4")}
    args = chunk_args("in.mp4", ladder_, chunks, chunks.chunks[1], outputs, EncodeOptions())
    # Decoding still starts 1 s before the first frame encoded (150 - 12 = 138: 5.52 s).
    assert args[:6] == ["ffmpeg", "-noaccurate_seek", "-ss", "4.520000", "-i", "in.mp4"]
    graph = args[args.index("-filter_complex") + 1]
    assert "trim=end_pts=306:start_pts=138[s1];[s1]setpts=PTS-138[s2]" in graph
    # Frame 12 of the file is frame 150 of the timeline: an IDR, and x264's keyint counts from it.
    assert args[args.index("-force_key_frames") + 1] == "expr:eq(n,12)"
    first = chunk_args("in.mp4", ladder_, chunks, chunks.chunks[0], outputs, EncodeOptions())
    assert "-force_key_frames" not in first  # nothing before frame 0 to warm up on
    assert "trim=end_pts=156:start_pts=0" in first[first.index("-filter_complex") + 1]
    # A warm-up of whole GOPs needs no forced keyframe: x264's own grid from frame 0 lands on it.
    gop = plan_chunks(source, ladder_, 6, warmup_frames=50)
    assert "-force_key_frames" not in chunk_args(
        "in.mp4", ladder_, gop, gop.chunks[2], outputs, EncodeOptions()
    )


def test_the_stitch_starts_each_warmed_up_chunk_at_its_first_kept_frame() -> None:
    chunks = plan_chunks(
        media(duration_s=30.0, video_duration_s=30.0),
        ladder_plan(media(duration_s=30.0, video_duration_s=30.0)),
        6,
        warmup_frames=12,
    )
    text = concat_list(chunks, [Path(f"{i}.mp4") for i in range(5)])
    assert text.splitlines()[1:6] == [
        "file '0.mp4'",
        "duration 6000000us",
        "file '1.mp4'",
        "inpoint 480000us",  # 12 frames at 25 fps: the presentation time of the kept IDR
        "duration 6000000us",
    ]
    assert text.splitlines()[-2:] == ["file '4.mp4'", "inpoint 480000us"]


def test_warmed_up_chunks_hold_the_warm_up_too_and_the_post_roll_cut_counts_from_the_end() -> None:
    chunks = ChunkPlan(
        Fraction(25),
        4,
        12,
        (Chunk(0, 0, 4), Chunk(1, 4, 8), Chunk(2, 8, None)),
        postroll_frames=2,
        warmup_frames=3,
    )
    first = packets(*range(6), keys=(0, 4))  # 4 frames + 2 of post-roll
    middle = packets(*range(9), keys=(0, 3, 7))  # 3 of warm-up + 4 + 2 of post-roll
    last = packets(*range(7), keys=(0, 3))  # 3 of warm-up + 4 to the end
    assert check_chunks("720p", [first, middle, last], chunks) == [4, 4, 4]
    with pytest.raises(OutputInvalid, match="chunk 1: 6 frames, planned 9"):
        check_chunks("720p", [first, packets(*range(6), keys=(0, 4)), last], chunks)
    assert cut_us(first, chunks, 4) == 80_000  # frame 4's dts: (4 - 2) frames
    assert cut_us(middle, chunks, 4) == 200_000  # frame 7's dts: (7 - 2) frames
    with pytest.raises(OutputInvalid, match="not 4 \\+ a post-roll"):
        cut_us(packets(*range(8)), chunks, 4)


def test_by_default_a_chunk_has_the_measured_post_roll_and_warm_up() -> None:
    # 6 frames after (the end side of the seam), 12 before (the start side): docs/media.md.
    chunks = chunk_plan(media(duration_s=30.0, video_duration_s=30.0), 6)
    assert (chunks.postroll_frames, chunks.warmup_frames) == (6, 12)
    assert [chunks.warmup(c) for c in chunks.chunks] == [0, 12, 12, 12, 12]
    assert [chunks.encoded_end(c) for c in chunks.chunks] == [156, 306, 456, 606, None]
