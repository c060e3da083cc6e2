"""HLS (fMP4/CMAF) from the same encode: the tee slaves, the playlists, and the HLS publish gate.

The encoder's ``tee`` muxer gets one ``hls`` slave per rendition next to its MP4 slave, fed the
same video packets (``v:i``) and the shared AAC packets (``a``), so HLS costs no decode and no
encode: only a second mux and its bytes in scratch. Each slave writes, under
``{hls_dir}/{rendition}/``: ``index.m3u8`` (VOD, ``EXT-X-ENDLIST``), ``init.mp4`` and
``seg_00000.m4s``, ... (docs/media.md, the layout contract). Audio is muxed into every
rendition's segments, so each variant plays alone. A stitched (chunked) job has no such encode:
``derive`` writes the same layout by stream copy from its MP4s, with the same muxer options
(``muxer_options``).

Segments are cut at keyframes only; every GOP is closed and lasts ``keyint`` frames, so
``hls_time`` is half a frame less than one GOP: the muxer then cuts at every keyframe even when
the source's own timestamps jitter a little, and every segment is exactly one GOP (the last one
shorter).

The gate (``check``) runs before any upload, next to the MP4 gate: every listed segment exists,
``EXT-X-ENDLIST`` is there, the ``EXTINF`` durations add up to the source's, each segment starts
with a keyframe (read from its ``moof``, see ``fmp4``), and every segment honours the target
duration, which is the GOP's. The master playlist is written from what the gate measured:
``BANDWIDTH`` is the peak segment bit rate as RFC 8216 defines it, ``AVERAGE-BANDWIDTH`` the
mean, ``CODECS`` the real ``avc1`` profile and level plus ``mp4a.40.2`` when there is audio.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

from transcoder.domain.errors import OutputInvalid
from transcoder.media import fmp4
from transcoder.media.ladder import Plan, Target
from transcoder.media.probe import MediaInfo
from transcoder.media.verify import tolerance_s

MASTER = "master.m3u8"
PLAYLIST = "index.m3u8"
INIT = "init.mp4"
SEGMENT_PATTERN = "seg_%05d.m4s"
AAC_LC = "mp4a.40.2"
CONTENT_TYPES = {
    ".m3u8": "application/vnd.apple.mpegurl",
    ".m4s": "video/iso.segment",
    ".mp4": "video/mp4",
}


def content_type(path: Path) -> str:
    return CONTENT_TYPES[path.suffix]


def hls_time_s(plan: Plan, source_fps: float) -> float:
    """``hls_time``: one GOP less half a frame, so the muxer cuts at every keyframe."""
    fps = plan.output_fps or source_fps
    return max(plan.keyint - 0.5, 0.5) / fps


def gop_s(plan: Plan, source_fps: float) -> float:
    """One GOP's duration at the output rate: what every segment but the last lasts."""
    return plan.keyint / (plan.output_fps or source_fps)


@dataclass(frozen=True, slots=True)
class HlsOutput:
    """Where the encode writes HLS (one folder per rendition) and how long a segment lasts."""

    folder: Path
    hls_time_s: float

    def prepare(self, plan: Plan) -> None:
        """Create the rendition folders the slaves write into (the muxer does not)."""
        for target in plan.targets:
            (self.folder / target.name).mkdir(parents=True, exist_ok=True)


def muxer_options(output: HlsOutput, target: Target) -> dict[str, str]:
    """The ``hls`` muxer's options for one rendition, in the order ffmpeg is given them.

    Shared by the tee slaves (a single pass) and the stream copy that derives HLS from finished
    MP4s (``derive``), so both write the same segments, names and playlists.
    """
    return {
        "hls_time": f"{math.floor(output.hls_time_s * 1e6) / 1e6:.6f}",
        "hls_playlist_type": "vod",
        "hls_segment_type": "fmp4",
        "hls_fmp4_init_filename": INIT,
        "hls_segment_filename": str(output.folder / target.name / SEGMENT_PATTERN),
    }


def playlist_path(output: HlsOutput, target: Target) -> Path:
    """Where one rendition's media playlist is written (the muxer's output file)."""
    return output.folder / target.name / PLAYLIST


def tee_slaves(plan: Plan, output: HlsOutput) -> list[str]:
    """One ``hls`` tee slave per rendition (the MP4 slaves select the same streams).

    The segment template is quoted for the tee muxer (``\\'`` survives its first unescaping
    as ``'``), so a scratch path may hold ``:``; the MP4 slaves' paths are never quoted either,
    so a path with ``|``, ``[`` or ``'`` is not supported anywhere.
    """
    audio = ",a" if plan.audio_index is not None else ""
    slaves = []
    for index, target in enumerate(plan.targets):
        options = ["f=hls", f"select=\\'v:{index}{audio}\\'"]
        for key, value in muxer_options(output, target).items():
            quoted = f"\\'{value}\\'" if key == "hls_segment_filename" else value
            options.append(f"{key}={quoted}")
        slaves.append(f"[{':'.join(options)}]{playlist_path(output, target)}")
    return slaves


@dataclass(frozen=True, slots=True)
class MediaPlaylist:
    target_duration_s: int
    map_uri: str | None
    segments: tuple[tuple[str, float], ...]  # (uri, EXTINF duration)
    vod: bool
    ended: bool


_TAG = re.compile(r"^#(EXT[A-Z0-9-]*)(?::(.*))?$")


def parse_media_playlist(text: str) -> MediaPlaylist:
    """The tags the gate checks, from one rendition's ``index.m3u8`` (ValueError if malformed)."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines or lines[0] != "#EXTM3U":
        raise ValueError("it does not start with #EXTM3U")
    target, map_uri, vod, ended = 0, None, False, False
    segments: list[tuple[str, float]] = []
    pending: float | None = None
    for line in lines[1:]:
        match = _TAG.match(line)
        if match is None:
            if not line.startswith("#") and pending is not None:
                segments.append((line, pending))
                pending = None
            continue
        tag, value = match.group(1), match.group(2) or ""
        if tag == "EXT-X-TARGETDURATION":
            target = int(value)
        elif tag == "EXTINF":
            pending = float(value.split(",", 1)[0])
        elif tag == "EXT-X-MAP":
            uri = re.search(r'URI="([^"]*)"', value)
            map_uri = uri.group(1) if uri else None
        elif tag == "EXT-X-PLAYLIST-TYPE":
            vod = value == "VOD"
        elif tag == "EXT-X-ENDLIST":
            ended = True
    return MediaPlaylist(target, map_uri, tuple(segments), vod, ended)


@dataclass(frozen=True, slots=True)
class Variant:
    """One rendition's checked HLS output, and what the master playlist says of it."""

    name: str
    folder: Path
    files: tuple[Path, ...]  # init, segments, then the media playlist
    segments: int
    duration_s: float
    peak_bps: int
    average_bps: int
    codecs: str
    width: int
    height: int
    frame_rate: float
    bytes: int


def peak_bps(segments: list[tuple[int, float]], target_s: int) -> int:
    """RFC 8216 4.1: the highest bit rate of any run of contiguous segments lasting 0.5-1.5x
    the target duration (a whole stream shorter than that: its mean)."""
    best = 0.0
    for start in range(len(segments)):
        size, duration = 0, 0.0
        for length, seconds in segments[start:]:
            size, duration = size + length, duration + seconds
            if duration > 1.5 * target_s:
                break
            if duration >= 0.5 * target_s:
                best = max(best, size * 8 / duration)
    if best == 0.0:
        total_s = sum(seconds for _, seconds in segments)
        best = sum(length for length, _ in segments) * 8 / max(total_s, 1e-3)
    return math.ceil(best)


def _listing_problems(folder: Path, playlist: MediaPlaylist, gop: float) -> list[str]:
    problems: list[str] = []
    if not playlist.ended:
        problems.append("no EXT-X-ENDLIST")
    if not playlist.vod:
        problems.append("not a VOD playlist")
    if playlist.map_uri != INIT or not (folder / INIT).is_file():
        problems.append(f"EXT-X-MAP is {playlist.map_uri!r}, expected {INIT} in scratch")
    if not playlist.segments:
        problems.append("no segments")
    for number, (uri, _) in enumerate(playlist.segments):
        if uri != SEGMENT_PATTERN % number:
            problems.append(f"segment {number} is {uri!r}, expected {SEGMENT_PATTERN % number}")
            break
        if not (folder / uri).is_file() or (folder / uri).stat().st_size == 0:
            problems.append(f"{uri} is listed but missing or empty in scratch")
    if playlist.target_duration_s > max(1, math.ceil(gop)):
        problems.append(f"target duration {playlist.target_duration_s}s > one GOP ({gop:.3f}s)")
    late = [
        uri for uri, seconds in playlist.segments if round(seconds) > playlist.target_duration_s
    ]
    if late:
        problems.append(f"{late[0]} is longer than the target duration")
    return problems


def _timing_problems(playlist: MediaPlaylist, source: MediaInfo) -> list[str]:
    # The EXTINFs time the video track; a source whose audio already ran longer (or shorter)
    # than its video has a container duration that much longer, as the MP4's has.
    total = sum(seconds for _, seconds in playlist.segments)
    allowed = tolerance_s(source) + _source_drift(source)
    if abs(total - source.duration_s) > allowed:
        return [f"segments add up to {total:.3f}s, source lasts {source.duration_s:.3f}s"]
    return []


def _source_drift(source: MediaInfo) -> float:
    if source.audio_duration_s is None or source.video_duration_s is None:
        return 0.0
    return abs(source.audio_duration_s - source.video_duration_s)


def _stream_problems(
    folder: Path, playlist: MediaPlaylist, target: Target, plan: Plan
) -> tuple[list[str], fmp4.Init | None]:
    try:
        init = fmp4.read_init(folder / INIT)
    except (OSError, fmp4.Fmp4Error) as exc:
        return [f"{INIT}: {exc}"], None
    problems: list[str] = []
    if (init.width, init.height) != (target.width, target.height):
        problems.append(f"init size {init.width}x{init.height} != {target.width}x{target.height}")
    if init.has_audio != (plan.audio_index is not None):
        problems.append(f"audio track {'present' if init.has_audio else 'missing'} in {INIT}")
    for uri, _ in playlist.segments:
        try:
            keyed = fmp4.starts_with_keyframe(folder / uri, init)
        except (OSError, fmp4.Fmp4Error) as exc:
            problems.append(f"{uri}: {exc}")
            break
        if not keyed:
            problems.append(f"{uri} does not start with a keyframe")
            break
    return problems, init


def _read(folder: Path, target: Target) -> MediaPlaylist:
    try:
        return parse_media_playlist((folder / PLAYLIST).read_text())
    except (OSError, ValueError) as exc:
        raise OutputInvalid(f"{target.name} HLS: no readable {PLAYLIST} ({exc})") from exc


def _failed(target: Target, problems: list[str]) -> OutputInvalid:
    return OutputInvalid(f"{target.name} HLS failed the publish gate: " + "; ".join(problems))


def check_variant(hls_dir: Path, target: Target, source: MediaInfo, plan: Plan) -> Variant:
    """Raise OutputInvalid naming every problem with one rendition's HLS output."""
    folder = hls_dir / target.name
    playlist = _read(folder, target)
    problems = _listing_problems(folder, playlist, gop_s(plan, source.fps))
    if problems:  # the files themselves are not all there: nothing more to read
        raise _failed(target, problems)
    stream, init = _stream_problems(folder, playlist, target, plan)
    problems = _timing_problems(playlist, source) + stream
    if problems or init is None:
        raise _failed(target, problems)
    return _measured(folder, target.name, playlist, init, plan.output_fps or source.fps)


def _measured(
    folder: Path, name: str, playlist: MediaPlaylist, init: fmp4.Init, fps: float
) -> Variant:
    segments = [(folder / uri, seconds) for uri, seconds in playlist.segments]
    sizes = [(path.stat().st_size, seconds) for path, seconds in segments]
    files = (folder / INIT, *(path for path, _ in segments), folder / PLAYLIST)
    duration = sum(seconds for _, seconds in sizes)
    return Variant(
        name=name,
        folder=folder,
        files=files,
        segments=len(segments),
        duration_s=round(duration, 3),
        peak_bps=peak_bps(sizes, playlist.target_duration_s),
        average_bps=math.ceil(sum(size for size, _ in sizes) * 8 / max(duration, 1e-3)),
        codecs=f"{init.codec},{AAC_LC}" if init.has_audio else init.codec,
        width=init.width,
        height=init.height,
        frame_rate=round(fps, 3),
        bytes=sum(path.stat().st_size for path in files),
    )


def check(hls_dir: Path, source: MediaInfo, plan: Plan) -> list[Variant]:
    """Every rendition's HLS output, checked (in the plan's order)."""
    return [check_variant(hls_dir, target, source, plan) for target in plan.targets]


def master_playlist(variants: list[Variant]) -> str:
    """The master playlist: one ``EXT-X-STREAM-INF`` per rendition, ``{rendition}/index.m3u8``."""
    lines = ["#EXTM3U", "#EXT-X-VERSION:7", "#EXT-X-INDEPENDENT-SEGMENTS"]
    for variant in variants:
        attributes = ",".join(
            (
                f"BANDWIDTH={variant.peak_bps}",
                f"AVERAGE-BANDWIDTH={variant.average_bps}",
                f"RESOLUTION={variant.width}x{variant.height}",
                f'CODECS="{variant.codecs}"',
                f"FRAME-RATE={variant.frame_rate:.3f}",
            )
        )
        lines += [f"#EXT-X-STREAM-INF:{attributes}", f"{variant.name}/{PLAYLIST}"]
    return "\n".join(lines) + "\n"
