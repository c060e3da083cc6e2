"""ffprobe JSON -> MediaInfo, and ffprobe/ffmpeg failures -> reason codes.

The parsing tests feed ffprobe 5.1's JSON shapes; tests/e2e/test_probe_real.py runs the real
ffprobe on tiny files, so what ffprobe actually reports (display matrix sign, misdetection warning)
is pinned.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Any

import pytest

from transcoder.domain.errors import AwsUnavailable, FfmpegFailed, InputRejected
from transcoder.domain.job import Reason
from transcoder.media import probe

VIDEO: dict[str, Any] = {
    "index": 0,
    "codec_name": "h264",
    "codec_type": "video",
    "width": 1920,
    "height": 1080,
    "sample_aspect_ratio": "1:1",
    "pix_fmt": "yuv420p",
    "r_frame_rate": "30/1",
    "avg_frame_rate": "30/1",
    "field_order": "progressive",
    "duration": "4.000000",
    "nb_frames": "120",
    "disposition": {"default": 1, "attached_pic": 0},
}
AUDIO: dict[str, Any] = {
    "index": 1,
    "codec_name": "aac",
    "codec_type": "audio",
    "duration": "4.010000",
    "disposition": {"default": 1},
}
FORMAT = {"format_name": "mov,mp4,m4a,3gp,3g2,mj2", "duration": "4.010000"}


def data(*streams: dict[str, Any], fmt: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"streams": list(streams), "format": FORMAT if fmt is None else fmt}


def matrix(rotation: float) -> dict[str, Any]:
    return {"side_data_list": [{"side_data_type": "Display Matrix", "rotation": rotation}]}


def test_a_plain_clip() -> None:
    info = probe.parse(data(VIDEO, AUDIO), size_bytes=123)
    assert (info.width, info.height, info.display_width, info.display_height) == (
        1920,
        1080,
        1920,
        1080,
    )
    assert (info.fps, info.base_fps, info.is_vfr, info.rotation) == (30.0, 30.0, False, 0)
    assert (info.duration_s, info.video_duration_s, info.audio_duration_s) == (4.01, 4.0, 4.01)
    assert (info.audio_index, info.audio_codec, info.frame_count, info.size_bytes) == (
        1,
        "aac",
        120,
        123,
    )
    assert not (info.is_hdr or info.is_interlaced or info.is_wide_gamut)


@pytest.mark.parametrize(
    ("extra", "rotation"),
    [
        (matrix(-90), 90),  # what phones write: ffprobe reports the matrix anticlockwise
        (matrix(90), 270),
        (matrix(180), 180),
        (matrix(-180), 180),
        ({"tags": {"rotate": "90"}}, 90),  # legacy tag (ffprobe < 5.0), clockwise
        ({"tags": {"rotate": "270"}}, 270),
        ({"tags": {"rotate": "-90"}}, 270),
        ({"tags": {"rotate": "bogus"}}, 0),
        ({**matrix(-90), "tags": {"rotate": "270"}}, 90),  # the display matrix wins
        ({"side_data_list": [{"side_data_type": "Stereo 3D"}]}, 0),
    ],
)
def test_displayed_rotation_from_the_display_matrix_or_the_legacy_tag(
    extra: dict[str, Any], rotation: int
) -> None:
    info = probe.parse(data({**VIDEO, **extra}), size_bytes=1)
    assert info.rotation == rotation
    swapped = rotation % 180 == 90
    assert (info.display_width, info.display_height) == ((1080, 1920) if swapped else (1920, 1080))


def test_the_audio_offset_is_relative_to_the_video() -> None:
    late = probe.parse(
        data({**VIDEO, "start_time": "1.400000"}, {**AUDIO, "start_time": "1.878667"}),
        size_bytes=1,
    )
    assert late.audio_offset_s == 0.478667
    assert probe.parse(data(VIDEO, AUDIO), size_bytes=1).audio_offset_s == 0.0
    assert probe.parse(data({**VIDEO, "start_time": "0.5"}), size_bytes=1).audio_offset_s == 0.0


def test_non_square_pixels_are_stretched_for_display() -> None:
    pal = {**VIDEO, "width": 720, "height": 576, "sample_aspect_ratio": "64:45"}
    info = probe.parse(data(pal), size_bytes=1)
    assert (info.sar, info.display_width, info.display_height) == (Fraction(64, 45), 1024, 576)


def test_variable_frame_rate_but_not_field_rate_interlacing() -> None:
    vfr = {**VIDEO, "r_frame_rate": "30/1", "avg_frame_rate": "70/3"}
    assert probe.parse(data(vfr), size_bytes=1).is_vfr
    fields = {**VIDEO, "r_frame_rate": "50/1", "avg_frame_rate": "25/1", "field_order": "tt"}
    info = probe.parse(data(fields), size_bytes=1)
    assert info.is_interlaced and not info.is_vfr
    assert probe.parse(data({**VIDEO, "r_frame_rate": "0/0"}), size_bytes=1).fps == 30.0


def test_hdr_and_wide_gamut() -> None:
    pq = {**VIDEO, "color_transfer": "smpte2084", "color_primaries": "bt2020"}
    info = probe.parse(data({**pq, "color_space": "bt2020nc"}), size_bytes=1)
    assert info.is_hdr and info.is_wide_gamut and info.color_space == "bt2020nc"
    hlg = probe.parse(data({**VIDEO, "color_transfer": "arib-std-b67"}), size_bytes=1)
    assert hlg.is_hdr
    sdr = probe.parse(data({**VIDEO, "color_primaries": "bt2020"}), size_bytes=1)
    assert sdr.is_wide_gamut and not sdr.is_hdr


def test_the_default_audio_track_is_chosen_even_when_it_is_not_the_first() -> None:
    commentary = {**AUDIO, "index": 1, "disposition": {"default": 0}}
    soundtrack = {**AUDIO, "index": 2, "disposition": {"default": 1}}
    info = probe.parse(data(VIDEO, commentary, soundtrack), size_bytes=1)
    assert (info.audio_index, info.audio_streams) == (2, 2)
    unflagged = {**AUDIO, "index": 2, "disposition": {"default": 0}}
    assert probe.parse(data(VIDEO, commentary, unflagged), size_bytes=1).audio_index == 1


def test_cover_art_is_not_the_video() -> None:
    cover = {**VIDEO, "index": 0, "codec_name": "mjpeg", "disposition": {"attached_pic": 1}}
    with pytest.raises(InputRejected) as rejected:
        probe.parse(data(cover, {**AUDIO, "index": 1}), size_bytes=1)
    assert rejected.value.reason == Reason.NO_VIDEO_STREAM


@pytest.mark.parametrize(
    ("streams", "fmt", "reason"),
    [
        ([AUDIO], FORMAT, Reason.NO_VIDEO_STREAM),
        ([], FORMAT, Reason.NO_VIDEO_STREAM),
        (
            [{**VIDEO, "codec_name": None, "codec_tag_string": "qqv1"}],
            FORMAT,
            Reason.UNSUPPORTED_CODEC,
        ),
        ([VIDEO], {"format_name": "image2", "duration": "0.04"}, Reason.NOT_A_VIDEO),
        ([{**VIDEO, "duration": None}], {"format_name": "mpegts"}, Reason.NOT_A_VIDEO),
    ],
)
def test_uploads_that_are_not_videos_are_rejected_with_a_reason(
    streams: list[dict[str, Any]], fmt: dict[str, Any], reason: Reason
) -> None:
    with pytest.raises(InputRejected) as rejected:
        probe.parse(data(*streams, fmt=fmt), size_bytes=1)
    assert rejected.value.reason == reason
    assert not rejected.value.retryable


MOOV = "[mov,mp4,m4a,3gp,3g2,mj2 @ 0x1] moov atom not found\nx.mp4: Invalid data found"
MISDETECTED = (
    "[mov,mp4,m4a,3gp,3g2,mj2 @ 0x1] Format mov,mp4,m4a,3gp,3g2,mj2 detected only with low "
    f"score of 1, misdetection possible!\n{MOOV}"
)


INVALID = "x.mp4: Invalid data found when processing input"
NO_DECODER = "Decoder (codec none) not found for input stream #0:0"
DECODE_ERRORS = "Error while decoding stream #0:0: Invalid data found when processing input"
REJECTED, NETWORK, OURS = InputRejected, AwsUnavailable, FfmpegFailed


@pytest.mark.parametrize(
    ("stderr", "code", "stage", "kind", "reason"),
    [
        (MOOV, 1, "probe", REJECTED, Reason.TRUNCATED),
        (MISDETECTED, 1, "probe", REJECTED, Reason.NOT_A_VIDEO),
        (INVALID, 1, "probe", REJECTED, Reason.NOT_A_VIDEO),
        (NO_DECODER, 1, "transcode", REJECTED, Reason.UNSUPPORTED_CODEC),
        (DECODE_ERRORS, 69, "transcode", REJECTED, Reason.UNDECODABLE),
        ("Server returned 404 Not Found", 1, "probe", REJECTED, Reason.SOURCE_NOT_FOUND),
        ("Connection reset by peer", 1, "transcode", NETWORK, Reason.AWS_UNAVAILABLE),
        ("[https] I/O error\n" + DECODE_ERRORS, 69, "transcode", NETWORK, Reason.AWS_UNAVAILABLE),
        ("No space left on device", 1, "transcode", OURS, Reason.SCRATCH_FULL),
        ("", -9, "transcode", OURS, Reason.FFMPEG_KILLED),
        ("something new", 1, "transcode", OURS, Reason.FFMPEG_FAILED),
        (INVALID, 1, "transcode", OURS, Reason.FFMPEG_FAILED),
    ],
)
def test_failures_are_classified(
    stderr: str, code: int, stage: str, kind: type[Exception], reason: Reason
) -> None:
    error = probe.classify_failure(stderr, code, stage=stage)
    assert type(error) is kind
    assert error.reason == reason


def test_rejections_explain_themselves() -> None:
    error = probe.classify_failure(MOOV, 1, stage="probe")
    assert str(error).startswith("the file ends before its index (moov) was written")
    assert "moov atom not found" in str(error)
