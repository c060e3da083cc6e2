"""Just enough of fragmented MP4 (ISO/IEC 14496-12) to check HLS segments without a process.

The HLS gate needs three facts per rendition: the video track's codec string (``avc1.PPCCLL``
from its ``avcC`` record) and coded size from ``init.mp4``, and whether each segment starts with
a sync sample. The last is read from the first ``moof`` of the segment: the video ``traf``'s
first sample flags come from ``trun`` (``first_sample_flags`` or the first sample's own flags),
else ``tfhd``'s default, else the init's ``trex`` default. Reading a few kilobytes of box
headers per segment costs microseconds; an ffprobe per segment costs a process start-up
(~50 ms) each, hundreds of them for a long video.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

# sample_is_non_sync_sample (ISO/IEC 14496-12 8.8.3.1): set on every sample but a keyframe.
NON_SYNC_SAMPLE = 0x0001_0000
# A sample entry's fixed fields (VisualSampleEntry) before its child boxes (avcC, ...).
VISUAL_SAMPLE_ENTRY_BYTES = 78
HEADER_BYTES = 8


class Fmp4Error(ValueError):
    """The file is not the fragmented MP4 the HLS muxer writes."""


@dataclass(frozen=True, slots=True)
class Init:
    """What the gate needs of a rendition's ``init.mp4``."""

    video_track_id: int
    codec: str  # avc1.PPCCLL
    width: int
    height: int
    has_audio: bool
    default_flags: dict[int, int]  # trex default_sample_flags by track id


def boxes(data: bytes, start: int = 0, end: int | None = None) -> Iterator[tuple[str, int, int]]:
    """(type, payload start, box end) of each box in ``data[start:end]``."""
    end = len(data) if end is None else end
    offset = start
    while offset + HEADER_BYTES <= end:
        size, kind = struct.unpack_from(">I4s", data, offset)
        header = HEADER_BYTES
        if size == 1:
            size = struct.unpack_from(">Q", data, offset + 8)[0]
            header = 16
        elif size == 0:
            size = end - offset
        if size < header or offset + size > end:
            raise Fmp4Error(f"box {kind!r} at {offset} runs past its parent")
        yield kind.decode("latin-1"), offset + header, offset + size
        offset += size


def child(data: bytes, start: int, end: int, kind: str) -> tuple[int, int]:
    """The payload span of the first ``kind`` box in ``data[start:end]``."""
    for found, payload, box_end in boxes(data, start, end):
        if found == kind:
            return payload, box_end
    raise Fmp4Error(f"no {kind} box")


def path_to(data: bytes, *kinds: str) -> tuple[int, int]:
    start, end = 0, len(data)
    for kind in kinds:
        start, end = child(data, start, end, kind)
    return start, end


def _track(data: bytes, start: int, end: int) -> tuple[int, str, int, int]:
    """(track id, handler, payload start, end of stsd) of one ``trak``."""
    tkhd, _ = child(data, start, end, "tkhd")
    version = data[tkhd]
    track_id = struct.unpack_from(">I", data, tkhd + (20 if version == 1 else 12))[0]
    mdia = child(data, start, end, "mdia")
    hdlr, _ = child(data, *mdia, "hdlr")
    handler = data[hdlr + 8 : hdlr + 12].decode("latin-1")
    stsd = path_to(data[mdia[0] : mdia[1]], "minf", "stbl", "stsd")
    return track_id, handler, mdia[0] + stsd[0], mdia[0] + stsd[1]


def _avc1(data: bytes, stsd: int, stsd_end: int) -> tuple[str, int, int]:
    """(codec string, width, height) of the first sample entry, which must be avc1."""
    entries = stsd + 8  # version/flags, entry_count
    kind, payload, end = next(boxes(data, entries, stsd_end))
    if kind != "avc1":
        raise Fmp4Error(f"video sample entry is {kind}, expected avc1")
    width, height = struct.unpack_from(">HH", data, payload + 24)
    avcc, _ = child(data, payload + VISUAL_SAMPLE_ENTRY_BYTES, end, "avcC")
    profile, compatibility, level = data[avcc + 1 : avcc + 4]
    return f"avc1.{profile:02x}{compatibility:02x}{level:02x}", width, height


def _trex_defaults(data: bytes, moov: tuple[int, int]) -> dict[int, int]:
    try:
        mvex = child(data, *moov, "mvex")
    except Fmp4Error:
        return {}
    defaults: dict[int, int] = {}
    for kind, payload, _ in boxes(data, *mvex):
        if kind == "trex":
            track_id, _, _, _, flags = struct.unpack_from(">IIIII", data, payload + 4)
            defaults[track_id] = flags
    return defaults


def read_init(path: Path) -> Init:
    """Parse a rendition's ``init.mp4`` (ftyp + moov with an avc1 track, maybe an mp4a one)."""
    data = path.read_bytes()
    moov = path_to(data, "moov")
    video: tuple[int, str, int, int] | None = None
    has_audio = False
    for kind, payload, end in boxes(data, *moov):
        if kind != "trak":
            continue
        track_id, handler, stsd, stsd_end = _track(data, payload, end)
        if handler == "vide" and video is None:
            video = (track_id, *_avc1(data, stsd, stsd_end))
        has_audio = has_audio or handler == "soun"
    if video is None:
        raise Fmp4Error(f"{path.name}: no video track")
    track_id, codec, width, height = video
    return Init(track_id, codec, width, height, has_audio, _trex_defaults(data, moov))


def _first_sample_flags(data: bytes, traf: tuple[int, int], fallback: int | None) -> int | None:
    tfhd, _ = child(data, *traf, "tfhd")
    tf_flags = struct.unpack_from(">I", data, tfhd)[0] & 0xFFFFFF
    # tfhd optional fields, in order: base offset (8), description index, duration, size (4 each)
    skip = 8 + sum(
        size for bit, size in ((0x01, 8), (0x02, 4), (0x08, 4), (0x10, 4)) if tf_flags & bit
    )
    default = struct.unpack_from(">I", data, tfhd + skip)[0] if tf_flags & 0x20 else fallback
    trun, _ = child(data, *traf, "trun")
    tr_flags = struct.unpack_from(">I", data, trun)[0] & 0xFFFFFF
    offset = trun + 8 + (4 if tr_flags & 0x01 else 0)  # version/flags, sample_count, data_offset
    if tr_flags & 0x04:
        return int(struct.unpack_from(">I", data, offset)[0])
    if tr_flags & 0x400:
        offset += 4 if tr_flags & 0x100 else 0
        offset += 4 if tr_flags & 0x200 else 0
        return int(struct.unpack_from(">I", data, offset)[0])
    return default


def starts_with_keyframe(path: Path, init: Init, *, read_bytes: int = 1 << 16) -> bool:
    """Whether the segment's first video sample is a sync sample (reads its first ``moof``s)."""
    with path.open("rb") as handle:
        data = handle.read(read_bytes)
    fallback = init.default_flags.get(init.video_track_id)
    for kind, payload, end in boxes_prefix(data):
        if kind != "moof":
            continue
        for traf_kind, traf, traf_end in boxes(data, payload, end):
            if traf_kind != "traf":
                continue
            tfhd, _ = child(data, traf, traf_end, "tfhd")
            if struct.unpack_from(">I", data, tfhd + 4)[0] != init.video_track_id:
                continue
            flags = _first_sample_flags(data, (traf, traf_end), fallback)
            return flags is not None and not flags & NON_SYNC_SAMPLE
    raise Fmp4Error(f"{path.name}: no video fragment in its first {read_bytes} bytes")


def boxes_prefix(data: bytes) -> Iterator[tuple[str, int, int]]:
    """Top-level boxes of a file's first bytes: the last, cut-off one (``mdat``) is skipped."""
    offset = 0
    while offset + HEADER_BYTES <= len(data):
        size, kind = struct.unpack_from(">I4s", data, offset)
        if size < HEADER_BYTES:
            return
        if offset + size <= len(data):
            yield kind.decode("latin-1"), offset + HEADER_BYTES, offset + size
        offset += size
