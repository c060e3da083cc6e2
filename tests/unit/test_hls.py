"""HLS from the same encode: the tee slaves, the master playlist, and the HLS publish gate.

The gate runs on playlists and fMP4 files built here box by box (tests/e2e/test_hls_real.py runs
it on what ffmpeg writes): each way a stream can be unplayable or wrong is named before any
upload.
"""

from __future__ import annotations

import dataclasses
import math
import struct
from pathlib import Path

import pytest
from media_facts import media

from transcoder.domain.errors import OutputInvalid
from transcoder.media import fmp4, hls
from transcoder.media.ffmpeg import EncodeOptions, build_args
from transcoder.media.ladder import Plan, Target

T360 = Target("360p", 640, 360, 21, 1500, 3000)
T720 = Target("720p", 1280, 720, 21, 4500, 9000)
PLAN = Plan((T360, T720), (), 0, 1, None, 50, deinterlace=False)
SILENT = dataclasses.replace(PLAN, audio_index=None)
SOURCE = media(duration_s=5.0, video_duration_s=5.0, audio_duration_s=5.0, fps=25.0)
NON_SYNC = 0x0101_0000  # depends on others, not a sync sample
SYNC = 0x0200_0000


def box(kind: str, *payload: bytes) -> bytes:
    body = b"".join(payload)
    return struct.pack(">I4s", 8 + len(body), kind.encode()) + body


def full(kind: str, *payload: bytes, flags: int = 0) -> bytes:
    return box(kind, struct.pack(">I", flags), *payload)


def trak(track_id: int, handler: str, entry: bytes) -> bytes:
    tkhd = full("tkhd", struct.pack(">III", 0, 0, track_id), b"\0" * 68)
    hdlr = full("hdlr", b"\0" * 4, handler.encode(), b"\0" * 13)
    stsd = full("stsd", struct.pack(">I", 1), entry)
    return box("trak", tkhd, box("mdia", hdlr, box("minf", box("stbl", stsd))))


def avc1(width: int, height: int, profile: int = 0x64, level: int = 0x1F) -> bytes:
    fields = b"\0" * 6 + struct.pack(">H", 1) + b"\0" * 16 + struct.pack(">HH", width, height)
    fields += b"\0" * (fmp4.VISUAL_SAMPLE_ENTRY_BYTES - len(fields))
    return box("avc1", fields, box("avcC", bytes([1, profile, 0, level, 0xFF])))


def init_mp4(width: int, height: int, *, audio: bool = True) -> bytes:
    tracks = trak(1, "vide", avc1(width, height))
    trex = full("trex", struct.pack(">IIIII", 1, 1, 0, 0, NON_SYNC))
    if audio:
        tracks += trak(2, "soun", box("mp4a", b"\0" * 28))
        trex += full("trex", struct.pack(">IIIII", 2, 1, 0, 0, 0))
    return box("ftyp", b"iso6") + box("moov", full("mvhd", b"\0" * 96), tracks, box("mvex", trex))


def segment(first_flags: int | None, *, mdat_bytes: int = 1000) -> bytes:
    """A segment whose video track's first sample has ``first_flags`` (None: trex's default)."""
    tfhd = full("tfhd", struct.pack(">I", 1), flags=0x020000)
    if first_flags is None:
        trun = full("trun", struct.pack(">Ii", 1, 0), flags=0x01)
    else:
        trun = full("trun", struct.pack(">IiI", 1, 0, first_flags), flags=0x05)
    audio = box("traf", full("tfhd", struct.pack(">I", 2)), full("trun", struct.pack(">I", 1)))
    moof = box("moof", full("mfhd", struct.pack(">I", 1)), audio, box("traf", tfhd, trun))
    return box("styp", b"msdh") + moof + box("mdat", b"\0" * mdat_bytes)


def playlist(durations: list[float], *, target: int = 2, end: bool = True) -> str:
    lines = ["#EXTM3U", "#EXT-X-VERSION:7", f"#EXT-X-TARGETDURATION:{target}"]
    lines += ["#EXT-X-MEDIA-SEQUENCE:0", "#EXT-X-PLAYLIST-TYPE:VOD", '#EXT-X-MAP:URI="init.mp4"']
    for number, seconds in enumerate(durations):
        lines += [f"#EXTINF:{seconds:.6f},", f"seg_{number:05d}.m4s"]
    return "\n".join([*lines, "#EXT-X-ENDLIST"] if end else lines) + "\n"


def write_stream(
    root: Path,
    target: Target,
    durations: list[float],
    *,
    text: str | None = None,
    flags: list[int | None] | None = None,
    size: tuple[int, int] | None = None,
    audio: bool = True,
) -> Path:
    folder = root / target.name
    folder.mkdir(parents=True)
    (folder / "init.mp4").write_bytes(
        init_mp4(*(size or (target.width, target.height)), audio=audio)
    )
    for number, first in enumerate(flags or [SYNC] * len(durations)):
        (folder / f"seg_{number:05d}.m4s").write_bytes(segment(first, mdat_bytes=1000 + number))
    (folder / "index.m3u8").write_text(text or playlist(durations))
    return folder


@pytest.fixture
def good(tmp_path: Path) -> Path:
    for target in PLAN.targets:
        write_stream(tmp_path, target, [2.0, 2.0, 1.0])
    return tmp_path


def test_every_rendition_gets_an_hls_slave_on_the_same_tee_fed_the_same_packets() -> None:
    outputs = {"360p": Path("/s/360p.mp4"), "720p": Path("/s/720p.mp4")}
    output = hls.HlsOutput(Path("/s/hls"), hls.hls_time_s(PLAN, 25.0))

    args = build_args("/in.mp4", PLAN, outputs, EncodeOptions(), hls_output=output)

    assert args.count("-i") == 1 and args.count("tee") == 1  # one decode, one encode, one tee
    common = "hls_playlist_type=vod:hls_segment_type=fmp4:hls_fmp4_init_filename=init.mp4"
    assert args[args.index("-nostdin") - 1].split("|") == [
        "[f=mp4:movflags=+faststart:select=\\'v:0,a\\']/s/360p.mp4",
        "[f=mp4:movflags=+faststart:select=\\'v:1,a\\']/s/720p.mp4",
        f"[f=hls:select=\\'v:0,a\\':hls_time=1.980000:{common}"
        ":hls_segment_filename=\\'/s/hls/360p/seg_%05d.m4s\\']/s/hls/360p/index.m3u8",
        f"[f=hls:select=\\'v:1,a\\':hls_time=1.980000:{common}"
        ":hls_segment_filename=\\'/s/hls/720p/seg_%05d.m4s\\']/s/hls/720p/index.m3u8",
    ]


def test_segments_are_cut_at_every_keyframe_of_the_gop_at_the_output_rate() -> None:
    ntsc = dataclasses.replace(PLAN, keyint=60, output_fps=None)
    assert hls.gop_s(ntsc, 30000 / 1001) == pytest.approx(2.002)
    assert hls.hls_time_s(ntsc, 30000 / 1001) == pytest.approx(59.5 / (30000 / 1001))
    # 7.2 fps: 14 frames = 1.944 s per GOP; hls_time=2 would cut every other keyframe
    low = dataclasses.replace(PLAN, keyint=14, output_fps=7.2)
    assert hls.hls_time_s(low, 25.0) < hls.gop_s(low, 25.0) < 2.0


def test_a_good_stream_passes_and_is_measured_for_the_master_playlist(good: Path) -> None:
    variants = hls.check(good, SOURCE, PLAN)

    low = variants[0]
    assert (low.name, low.segments, low.duration_s) == ("360p", 3, 5.0)
    assert (low.codecs, low.width, low.height, low.frame_rate) == (
        "avc1.64001f,mp4a.40.2",
        640,
        360,
        25.0,
    )
    assert [path.name for path in low.files] == [
        "init.mp4",
        "seg_00000.m4s",
        "seg_00001.m4s",
        "seg_00002.m4s",
        "index.m3u8",
    ]
    sizes = [(good / "360p" / f"seg_{n:05d}.m4s").stat().st_size for n in range(3)]
    # peak: the densest run of segments lasting 1-3 s (the 1 s tail counts on its own)
    windows = [sizes[0] * 8 / 2, sizes[1] * 8 / 2, sizes[2] * 8 / 1, (sizes[1] + sizes[2]) * 8 / 3]
    assert low.peak_bps == math.ceil(max(windows))
    assert low.average_bps == math.ceil(sum(sizes) * 8 / 5)
    assert low.bytes == sum(path.stat().st_size for path in low.files)


def test_the_master_playlist_lists_every_rendition_with_its_measured_facts(good: Path) -> None:
    variants = hls.check(good, SOURCE, PLAN)
    low, high = variants

    assert hls.master_playlist(variants) == (
        "#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-INDEPENDENT-SEGMENTS\n"
        f"#EXT-X-STREAM-INF:BANDWIDTH={low.peak_bps},AVERAGE-BANDWIDTH={low.average_bps},"
        'RESOLUTION=640x360,CODECS="avc1.64001f,mp4a.40.2",FRAME-RATE=25.000\n'
        "360p/index.m3u8\n"
        f"#EXT-X-STREAM-INF:BANDWIDTH={high.peak_bps},AVERAGE-BANDWIDTH={high.average_bps},"
        'RESOLUTION=1280x720,CODECS="avc1.64001f,mp4a.40.2",FRAME-RATE=25.000\n'
        "720p/index.m3u8\n"
    )


def test_a_stream_without_audio_declares_only_its_video_codec(tmp_path: Path) -> None:
    write_stream(tmp_path, T360, [2.0, 2.0, 1.0], audio=False)
    write_stream(tmp_path, T720, [2.0, 2.0, 1.0], audio=False)

    assert [v.codecs for v in hls.check(tmp_path, SOURCE, SILENT)] == ["avc1.64001f"] * 2
    with pytest.raises(OutputInvalid, match="audio track missing"):
        hls.check(tmp_path, SOURCE, PLAN)


def test_the_peak_joins_a_short_tail_to_its_neighbour_as_rfc_8216_says() -> None:
    # a 0.04 s last segment (one keyframe) alone would claim 25x the bit rate of the rest
    segments = [(500_000, 2.0), (500_000, 2.0), (50_000, 0.04)]
    assert hls.peak_bps(segments, 2) == math.ceil(550_000 * 8 / 2.04)  # not 10 Mbit/s
    assert hls.peak_bps([(1000, 0.5)], 2) == 16_000  # shorter than half the target: its mean


@pytest.mark.parametrize(
    ("durations", "text", "flags", "problem"),
    [
        ([2.0, 2.0, 1.0], playlist([2.0, 2.0, 1.0], end=False), None, "no EXT-X-ENDLIST"),
        ([2.0, 2.0, 1.0], playlist([2.0, 2.0], end=True) + "", None, "segments add up to 4.000s"),
        ([2.0, 2.0, 1.0], None, [SYNC, NON_SYNC, SYNC], "seg_00001.m4s does not start with a key"),
        ([2.0, 2.0, 1.0], None, [SYNC, None, SYNC], "seg_00001.m4s does not start with a key"),
        ([4.0, 1.0], playlist([4.0, 1.0], target=4), None, "target duration 4s > one GOP"),
        ([2.0, 3.0], playlist([2.0, 3.0]), None, "seg_00001.m4s is longer than the target"),
        ([2.0], playlist([2.0, 2.0, 1.0]), None, "seg_00001.m4s is listed but missing"),
        (
            [2.0, 2.0, 1.0],
            playlist([2.0, 2.0, 1.0]).replace("init.mp4", "i.mp4"),
            None,
            "EXT-X-MAP",
        ),
    ],
)
def test_a_broken_stream_fails_the_gate_naming_the_problem(
    tmp_path: Path,
    durations: list[float],
    text: str | None,
    flags: list[int | None] | None,
    problem: str,
) -> None:
    write_stream(tmp_path, T360, durations, text=text, flags=flags)

    with pytest.raises(OutputInvalid, match=f"360p HLS failed the publish gate: .*{problem}"):
        hls.check_variant(tmp_path, T360, SOURCE, PLAN)


def test_a_stream_at_the_wrong_size_or_without_playlist_fails(tmp_path: Path) -> None:
    write_stream(tmp_path, T360, [2.0, 2.0, 1.0], size=(640, 352))
    with pytest.raises(OutputInvalid, match="init size 640x352 != 640x360"):
        hls.check_variant(tmp_path, T360, SOURCE, PLAN)
    with pytest.raises(OutputInvalid, match=r"720p HLS: no readable index\.m3u8"):
        hls.check_variant(tmp_path, T720, SOURCE, PLAN)


def test_a_source_whose_audio_outlasts_its_video_is_allowed_that_difference(tmp_path: Path) -> None:
    write_stream(tmp_path, T360, [2.0, 2.0, 1.0])
    longer_audio = dataclasses.replace(SOURCE, duration_s=5.5, audio_duration_s=5.5)

    assert hls.check_variant(tmp_path, T360, longer_audio, PLAN).duration_s == 5.0
    with pytest.raises(OutputInvalid, match=r"add up to 5\.000s, source lasts 5\.500s"):
        hls.check_variant(tmp_path, T360, dataclasses.replace(SOURCE, duration_s=5.5), PLAN)
