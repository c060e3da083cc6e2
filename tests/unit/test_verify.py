"""The publish gate: every way a rendition can be wrong is named; a cut source is told apart."""

from __future__ import annotations

import dataclasses
import struct
from pathlib import Path
from typing import Any

import pytest
from media_facts import media

from transcoder.domain.errors import InputRejected, OutputInvalid
from transcoder.domain.job import Reason
from transcoder.media.ladder import ColourIn, Plan, Target
from transcoder.media.verify import Verified, check, check_complete, top_level_atoms

TARGET = Target("720p", 1280, 720, 23, 4500, 9000)
PLAN = Plan((TARGET,), (), 0, 1, None, 50, deinterlace=False)
SOURCE = media(
    duration_s=4.0,
    size_bytes=1,
    width=1280,
    height=720,
    frame_count=100,
    video_duration_s=4.0,
    audio_duration_s=4.0,
)
VIDEO: dict[str, Any] = {
    "codec_type": "video",
    "codec_name": "h264",
    "profile": "High",
    "pix_fmt": "yuv420p",
    "width": 1280,
    "height": 720,
    "sample_aspect_ratio": "1:1",
    "field_order": "progressive",
    "start_time": "0.000000",
    "duration": "4.000000",
    "nb_frames": "100",
}
AUDIO: dict[str, Any] = {
    "codec_type": "audio",
    "codec_name": "aac",
    "start_time": "0.000000",
    "duration": "4.010000",
}
FORMAT = {"duration": "4.010000", "bit_rate": "2500000"}


def box(kind: bytes, payload: bytes = b"") -> bytes:
    return struct.pack(">I4s", 8 + len(payload), kind) + payload


def mp4(path: Path, *kinds: bytes) -> Path:
    path.write_bytes(b"".join(box(kind, b"\0" * 8) for kind in kinds))
    return path


@pytest.fixture
def faststart(tmp_path: Path) -> Path:
    return mp4(tmp_path / "ok.mp4", b"ftyp", b"moov", b"free", b"mdat")


def output(video: dict[str, Any] | None = None, *audio: dict[str, Any]) -> dict[str, Any]:
    streams = [{**VIDEO, **(video or {})}, *audio]
    return {"streams": streams, "format": FORMAT}


def problems(path: Path, probe: dict[str, Any], plan: Plan = PLAN, **source: Any) -> str:
    with pytest.raises(OutputInvalid) as failed:
        check(path, probe, TARGET, dataclasses.replace(SOURCE, **source), plan)
    assert failed.value.retryable
    return str(failed.value)


def test_a_good_rendition_passes_and_reports_its_facts(faststart: Path) -> None:
    assert check(faststart, output(None, AUDIO), TARGET, SOURCE, PLAN) == Verified(
        width=1280, height=720, duration_s=4.01, bitrate_kbps=2500, frames=100
    )


def test_every_problem_is_named(faststart: Path) -> None:
    bad = {
        "codec_name": "hevc",
        "profile": "Main",
        "pix_fmt": "yuv420p10le",
        "width": 720,
        "height": 1280,
        "sample_aspect_ratio": "4:3",
        "field_order": "tt",
        "side_data_list": [{"rotation": -90}],
    }
    message = problems(faststart, output(bad, AUDIO))
    for expected in (
        "video is hevc/yuv420p10le",
        "profile 'Main'",
        "size 720x1280 != planned 1280x720",
        "pixels are not square",
        "rotation 90 left",
        "field order tt",
    ):
        assert expected in message


def test_audio_must_be_present_exactly_when_the_source_had_it(faststart: Path) -> None:
    assert "0 audio streams, expected 1 AAC" in problems(faststart, output())
    silent = dataclasses.replace(PLAN, audio_index=None)
    assert "1 audio streams, expected 0 AAC" in problems(faststart, output(None, AUDIO), silent)
    mp3 = {**AUDIO, "codec_name": "mp3"}
    assert "expected 1 AAC" in problems(faststart, output(None, mp3))
    assert check(faststart, output(), TARGET, SOURCE, silent).width == 1280


def test_duration_within_a_tenth_of_a_second_or_two_frames(faststart: Path) -> None:
    long = dataclasses.replace(SOURCE, duration_s=4.1)
    assert check(faststart, output(None, AUDIO), TARGET, long, PLAN).duration_s == 4.01
    message = problems(faststart, output(None, AUDIO), duration_s=4.2)
    assert "duration 4.010s != source 4.200s" in message
    slow = dataclasses.replace(SOURCE, duration_s=4.15, fps=10.0)  # two frames = 0.2 s
    assert check(faststart, output({"nb_frames": "40"}, AUDIO), TARGET, slow, PLAN).width == 1280


def test_frame_count_must_match_the_duration(faststart: Path) -> None:
    message = problems(faststart, output({"nb_frames": "80"}, AUDIO))
    assert "80 frames in 4.000s at 25.000 fps" in message
    capped = dataclasses.replace(PLAN, output_fps=60.0)
    assert "100 frames in 4.000s at 60.000 fps" in problems(faststart, output(None, AUDIO), capped)


def test_audio_must_stay_in_sync_with_the_video(faststart: Path) -> None:
    late = {**AUDIO, "start_time": "0.500000"}
    assert "audio out of sync with video (start 0.500s" in problems(faststart, output(None, late))
    short = {**AUDIO, "duration": "3.000000"}
    assert "audio out of sync" in problems(faststart, output(None, short))
    # A source whose audio already ended early may keep that difference, no more.
    early_end = dataclasses.replace(SOURCE, audio_duration_s=3.0)
    assert check(faststart, output(None, short), TARGET, early_end, PLAN).width == 1280
    # A source whose audio starts late keeps that offset; losing it is the bug.
    starts_late = dataclasses.replace(SOURCE, audio_offset_s=0.5)
    assert check(faststart, output(None, late), TARGET, starts_late, PLAN).width == 1280
    assert "audio out of sync" in problems(faststart, output(None, AUDIO), audio_offset_s=0.5)


def test_hdr_sources_need_bt709_tags(faststart: Path) -> None:
    hdr = dataclasses.replace(PLAN, colour=ColourIn("smpte2084", "bt2020", "bt2020nc", True))
    untagged = problems(faststart, output(None, AUDIO), hdr)
    assert "colour tags [None, None, None] after conversion, expected bt709" in untagged
    tags = {"color_primaries": "bt709", "color_transfer": "bt709", "color_space": "bt709"}
    assert check(faststart, output(tags, AUDIO), TARGET, SOURCE, hdr).width == 1280


def test_moov_must_come_before_mdat(tmp_path: Path) -> None:
    late_moov = mp4(tmp_path / "late.mp4", b"ftyp", b"mdat", b"moov")
    assert "not faststart (top-level boxes ['ftyp', 'mdat', 'moov'])" in problems(
        late_moov, output(None, AUDIO)
    )
    assert "not faststart" in problems(mp4(tmp_path / "none.mp4", b"ftyp"), output(None, AUDIO))


def test_exactly_one_video_stream() -> None:
    two = {"streams": [VIDEO, VIDEO, AUDIO], "format": FORMAT}
    with pytest.raises(OutputInvalid, match="2 video streams, expected 1"):
        check(Path("unused"), two, TARGET, SOURCE, PLAN)


def test_top_level_atoms_follow_64_bit_sizes(tmp_path: Path) -> None:
    large = struct.pack(">I4sQ", 1, b"mdat", 16 + 4) + b"\0" * 4
    path = tmp_path / "large.mp4"
    path.write_bytes(box(b"ftyp") + large + box(b"moov") + struct.pack(">I4s", 0, b"free"))
    assert top_level_atoms(path) == ["ftyp", "mdat", "moov", "free"]
    path.write_bytes(box(b"ftyp") + struct.pack(">I4s", 3, b"moov"))
    assert top_level_atoms(path) == ["ftyp"]


def test_a_source_cut_short_is_rejected_as_truncated_not_retried() -> None:
    long_source = dataclasses.replace(SOURCE, duration_s=5.312)
    half = {"streams": [VIDEO], "format": {"duration": "2.411"}}
    with pytest.raises(InputRejected) as cut:
        check_complete(half, long_source)
    assert cut.value.reason == Reason.TRUNCATED
    assert not cut.value.retryable
    assert "declares 5.312 s but only 2.411 s could be decoded" in str(cut.value)


def test_small_shortfalls_are_left_to_the_gate() -> None:
    check_complete(output(), dataclasses.replace(SOURCE, duration_s=4.3))  # 0.29 s of 4.3 s
    with pytest.raises(InputRejected):
        check_complete(output(), dataclasses.replace(SOURCE, duration_s=4.5))
    hour = dataclasses.replace(SOURCE, duration_s=3600.0)
    check_complete({"streams": [VIDEO], "format": {"duration": "3599.5"}}, hour)
    with pytest.raises(InputRejected):
        check_complete({"streams": [VIDEO], "format": {"duration": "3598.5"}}, hour)
