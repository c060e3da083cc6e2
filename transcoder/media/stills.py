"""Poster and scrubbing thumbnails from the same decode: geometry, ffmpeg branches, WebVTT, gate.

Two extra ``split`` branches of the picture the renditions are made from (already deinterlaced,
at the output rate, tone-mapped to BT.709, upright) feed two image outputs of the one ffmpeg:

* **Poster**: candidates one every ``candidate_s`` seconds, scaled to the top rendition's size,
  near-black (share of black pixels, ``blackframe``) and flat (luma entropy, ``entropy``) frames
  dropped, then ffmpeg's ``thumbnail`` filter picks the most representative of the first
  ``POSTER_WINDOW`` candidates. When every candidate is dark or flat nothing is picked, and the
  poster is what an unfiltered ``thumbnail`` picked of the same window: a dark video gets one.
* **Sprite**: one tile every ``interval_s`` seconds (chosen so a long video has at most
  ``MAX_TILES`` tiles), ``TILE_WIDTH`` wide with the output's aspect (portrait stays portrait),
  laid out ``columns`` x ``rows`` by ``tile``. Its WebVTT index has one cue per tile, contiguous
  from 0 to the source's duration, each pointing at ``sprite.jpg#xywh=X,Y,W,H``.

``check`` is the stills part of the publish gate: the JPEGs are complete and of the planned size,
and the VTT parses into contiguous cues covering the duration, every rectangle inside the sprite.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ffmpeg

from transcoder.domain.errors import OutputInvalid
from transcoder.media.ladder import Plan, even

BRANCHES = 2  # split outputs the stills take from the picture: poster candidates, sprite tiles
MAX_TILES = 100
MAX_COLUMNS = 10
TILE_WIDTH = 160
# Tile intervals a viewer reads easily; a video too long for the last one gets ceil(d / MAX_TILES).
INTERVALS_S = (1, 2, 3, 5, 10, 15, 20, 30, 45, 60, 90, 120, 180, 240, 300, 600)
POSTER_WINDOW = 10  # candidates the thumbnail filter compares (each buffered at poster size)
MIN_CANDIDATE_S, MAX_CANDIDATE_S = 1.0, 10.0
# Measured on 8-bit limited-range luma (black is 16), as the renditions store it: a frame with
# 90 % of its pixels at 32 or below is near black (``blackframe``: cheaper than signalstats, and
# a small bright logo on black does not save it); a normalised luma entropy of 0.3 or less is a
# flat picture (a fade, a solid title card); footage measures 0.6-0.95.
BLACK_LUMA, MAX_BLACK_PERCENT = 32, 90
FLAT_ENTROPY = 0.3
ENTROPY_KEY = "lavfi.entropy.normalized_entropy.normal.Y"
POSTER_QUALITY, SPRITE_QUALITY = 3, 5  # mjpeg -q:v (2 best .. 31 worst)
SPRITE_NAME, VTT_NAME = "sprite.jpg", "thumbnails.vtt"
JPEG_TYPE, VTT_TYPE = "image/jpeg", "text/vtt"


@dataclass(frozen=True, slots=True)
class StillFiles:
    """Where ffmpeg writes the stills in the job's scratch directory."""

    poster: Path
    sprite: Path
    vtt: Path

    @classmethod
    def in_dir(cls, folder: Path) -> StillFiles:
        return cls(
            folder / "poster.jpg",
            folder / SPRITE_NAME,
            folder / VTT_NAME,
        )


@dataclass(frozen=True, slots=True)
class Stills:
    """What to make: the poster's size, the candidates' spacing, the sprite's grid."""

    poster_width: int
    poster_height: int
    candidate_s: float
    interval_s: float
    count: int
    tile_width: int
    tile_height: int
    columns: int
    rows: int
    duration_s: float
    files: StillFiles

    @property
    def sprite_size(self) -> tuple[int, int]:
        return self.columns * self.tile_width, self.rows * self.tile_height


@dataclass(frozen=True, slots=True)
class Cue:
    start_s: float
    end_s: float
    payload: str


def interval_for(duration_s: float) -> float:
    """The tile interval: the shortest readable one that keeps the tiles to ``MAX_TILES``."""
    for interval in INTERVALS_S:
        if math.ceil(duration_s / interval) <= MAX_TILES:
            return float(interval)
    return float(math.ceil(duration_s / MAX_TILES))


def tile_count(duration_s: float, interval_s: float, tolerance_s: float) -> int:
    """Tiles for the duration: one per started interval, ignoring a tail within the tolerance.

    The sprite takes the first frame at or after each ``k * interval_s``; a tail shorter than the
    tolerance (a container a few ms longer than its last frame) would get no frame, so the last
    cue is stretched over it instead.
    """
    return max(1, math.ceil((duration_s - tolerance_s) / interval_s))


def grid(count: int) -> tuple[int, int]:
    """(columns, rows): at most ``MAX_COLUMNS`` wide, as few rows as the count needs."""
    columns = min(count, MAX_COLUMNS)
    return columns, math.ceil(count / columns)


def tile_size(width: int, height: int) -> tuple[int, int]:
    """A tile ``TILE_WIDTH`` wide (narrower only for a narrower picture), height by the aspect."""
    tile_w = min(TILE_WIDTH, width // 2 * 2)
    return tile_w, even(tile_w * height / width)


def candidate_spacing(duration_s: float) -> float:
    """Poster candidates spread so the window spans the first half of the video (1 s to 10 s)."""
    spacing = duration_s / (2 * POSTER_WINDOW)
    return round(min(MAX_CANDIDATE_S, max(MIN_CANDIDATE_S, spacing)), 3)


def plan(duration_s: float, ladder_plan: Plan, tolerance_s: float, folder: Path) -> Stills:
    """The stills of a ``duration_s`` source encoded as ``ladder_plan``, written to ``folder``."""
    top = ladder_plan.targets[-1]
    interval = interval_for(duration_s)
    count = tile_count(duration_s, interval, tolerance_s)
    tile_w, tile_h = tile_size(top.width, top.height)
    columns, rows = grid(count)
    return Stills(
        poster_width=top.width,
        poster_height=top.height,
        candidate_s=candidate_spacing(duration_s),
        interval_s=interval,
        count=count,
        tile_width=tile_w,
        tile_height=tile_h,
        columns=columns,
        rows=rows,
        duration_s=round(duration_s, 3),
        files=StillFiles.in_dir(folder),
    )


# --- the ffmpeg branches ------------------------------------------------------------------------


def _every(stream: Any, seconds: float) -> Any:
    # The first frame at or after each multiple of ``seconds``: exactly one per interval, even
    # across a gap in the timestamps, and no duplicated frames (unlike the fps filter).
    return stream.filter("select", f"gte(t,selected_n*{seconds:g})")


def _jpeg(pictures: list[Any], path: Path, quality: int) -> Any:
    # One after the other, each overwriting the file (update), written as they come (passthrough:
    # the image2 muxer's constant-rate default would duplicate or drop). Stamped 0 s, 1 s, 2 s:
    # their own times can repeat (a sprite carries its first tile's), and these stay behind the
    # renditions' time that -progress reports (only a clip under 2 s could see out_time jump).
    # Converted to JPEG's full range only now: two or three pictures, not every candidate.
    stream = ffmpeg.concat(*pictures).filter("format", "yuvj420p").filter("setpts", "N/TB")
    options = {"c:v": "mjpeg", "q:v": quality, "update": 1, "fps_mode": "passthrough"}
    return ffmpeg.output(stream, str(path), format="image2", **options)


def _first(stream: Any) -> Any:
    return stream.filter("trim", end_frame=1)


def _kept(key: str, function: str, value: float) -> dict[str, str]:
    # metadata=mode=select passes a frame only if it carries ``key`` and it compares true.
    return {"mode": "select", "key": key, "value": f"{value:g}", "function": function}


# ffmpeg prints no -progress at all until every output file has written its header, and an image
# output writes it with its first picture: a sprite made at the end (or a poster chosen after a
# window of candidates) would leave the worker blind to the encode, and its stall detector would
# kill a healthy job. So each image output starts with a placeholder at once (the first
# candidate; the first tile padded to the sprite's size), and ``concat`` then appends what
# overwrites it: the last picture written is the one published.


def _poster(branch: Any, stills: Stills) -> list[Any]:
    candidates = (
        _every(branch, stills.candidate_s)
        .filter("scale", stills.poster_width, stills.poster_height)
        .filter("setsar", "1")
        .filter("format", "yuv420p")  # what blackframe measures
        .filter_multi_output("split", 3)
    )
    # The fallback, for a video dark or flat throughout: the best of the unfiltered window.
    fallback = candidates.stream(1).filter("thumbnail", n=POSTER_WINDOW)
    best = (
        candidates.stream(2)
        # amount=0: every frame is annotated with its share of black pixels, not just black ones
        .filter("blackframe", amount=0, threshold=BLACK_LUMA)
        .filter("metadata", **_kept("lavfi.blackframe.pblack", "less", MAX_BLACK_PERCENT))
        .filter("entropy")
        .filter("metadata", **_kept(ENTROPY_KEY, "greater", FLAT_ENTROPY))
        .filter("thumbnail", n=POSTER_WINDOW)
    )
    return [_first(candidates.stream(0)), _first(fallback), _first(best)]


def _sprite(branch: Any, stills: Stills) -> list[Any]:
    tiles = (
        _every(branch, stills.interval_s)
        .filter("scale", stills.tile_width, stills.tile_height)
        .filter("setsar", "1")
        .filter_multi_output("split", 2)
    )
    width, height = stills.sprite_size
    placeholder = _first(tiles.stream(0)).filter("pad", width, height, color="black")
    layout = f"{stills.columns}x{stills.rows}"
    tiled = tiles.stream(1).filter("tile", layout=layout, color="black")  # spare cells black
    return [placeholder, _first(tiled)]


def outputs(branches: list[Any], stills: Stills) -> list[Any]:
    """The two image outputs fed by two ``split`` branches: the poster and the sprite."""
    poster_branch, sprite_branch = branches
    return [
        _jpeg(_poster(poster_branch, stills), stills.files.poster, POSTER_QUALITY),
        _jpeg(_sprite(sprite_branch, stills), stills.files.sprite, SPRITE_QUALITY),
    ]


# --- the WebVTT index ---------------------------------------------------------------------------


def cues(stills: Stills) -> list[Cue]:
    """One cue per tile, contiguous from 0; the last one ends at the duration."""
    found = []
    for index in range(stills.count):
        x = index % stills.columns * stills.tile_width
        y = index // stills.columns * stills.tile_height
        start = index * stills.interval_s
        end = stills.duration_s if index == stills.count - 1 else start + stills.interval_s
        payload = f"{SPRITE_NAME}#xywh={x},{y},{stills.tile_width},{stills.tile_height}"
        found.append(Cue(start, end, payload))
    return found


def timestamp(seconds: float) -> str:
    milliseconds = round(seconds * 1000)
    hours, rest = divmod(milliseconds, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    return f"{hours:02d}:{minutes:02d}:{rest // 1000:02d}.{rest % 1000:03d}"


def vtt_text(stills: Stills) -> str:
    """The WebVTT file (payloads relative to it: the sprite sits next to the VTT)."""
    blocks = [
        f"{timestamp(cue.start_s)} --> {timestamp(cue.end_s)}\n{cue.payload}"
        for cue in cues(stills)
    ]
    return "WEBVTT\n\n" + "\n\n".join(blocks) + "\n"


TIMESTAMP = re.compile(r"^(?:(\d+):)?([0-5]\d):([0-5]\d)\.(\d{3})$")
XYWH = re.compile(r"^(?P<name>[^#\s]+)#xywh=(\d+),(\d+),(\d+),(\d+)$")


def parse_timestamp(text: str) -> float:
    found = TIMESTAMP.match(text.strip())
    if found is None:
        raise ValueError(f"bad WebVTT timestamp {text!r}")
    hours, minutes, seconds, millis = (int(part or 0) for part in found.groups())
    return hours * 3600 + minutes * 60 + seconds + millis / 1000


def parse_vtt(text: str) -> list[Cue]:
    """The cues of a WebVTT file; ValueError when it is not one."""
    blocks = [b for b in text.replace("\r\n", "\n").split("\n\n") if b.strip()]
    if not blocks or not re.match(r"^(\ufeff)?WEBVTT([ \t].*)?$", blocks[0].split("\n")[0]):
        raise ValueError("missing the WEBVTT header")
    parsed = []
    for block in blocks[1:]:
        lines = block.strip("\n").split("\n")
        if "-->" not in lines[0]:
            lines = lines[1:]  # a cue identifier
        if not lines or "-->" not in lines[0]:
            raise ValueError(f"cue without timings: {block!r}")
        start, _, rest = lines[0].partition("-->")
        end = rest.split()[0] if rest.split() else ""
        parsed.append(Cue(parse_timestamp(start), parse_timestamp(end), "\n".join(lines[1:])))
    return parsed


# --- the publish gate ---------------------------------------------------------------------------

SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}  # frame headers, not DHT/JPG/DAC


def jpeg_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) of a complete baseline/progressive JPEG, else None (reads the headers)."""
    if data[:2] != b"\xff\xd8" or data[-2:] != b"\xff\xd9":
        return None
    offset = 2
    while offset + 4 <= len(data):
        if data[offset] != 0xFF:
            return None
        marker = data[offset + 1]
        if marker == 0xFF:  # fill byte
            offset += 1
            continue
        length = int.from_bytes(data[offset + 2 : offset + 4], "big")
        if marker in SOF_MARKERS and offset + 9 <= len(data):
            height = int.from_bytes(data[offset + 5 : offset + 7], "big")
            return int.from_bytes(data[offset + 7 : offset + 9], "big"), height
        offset += 2 + length
    return None


def _image_problems(path: Path, what: str, expected: tuple[int, int]) -> list[str]:
    if not path.exists():
        return [f"no {what} was written"]
    size = jpeg_size(path.read_bytes())
    if size is None:
        return [f"{what} is not a complete JPEG"]
    if size != expected:
        return [f"{what} is {size[0]}x{size[1]}, expected {expected[0]}x{expected[1]}"]
    return []


def _cue_problems(found: list[Cue], stills: Stills, tolerance_s: float) -> list[str]:
    if len(found) != stills.count:
        return [f"{len(found)} cues, expected {stills.count}"]
    problems, previous_end = [], 0.0
    width, height = stills.sprite_size
    for index, cue in enumerate(found):
        if abs(cue.start_s - previous_end) > 0.0005 or cue.end_s <= cue.start_s:
            problems.append(f"cue {index} spans {cue.start_s:.3f}-{cue.end_s:.3f}s (a gap)")
        previous_end = cue.end_s
        area = XYWH.match(cue.payload)
        x, y, w, h = (int(v) for v in area.groups()[1:]) if area else (0, 0, 0, 0)
        inside = w > 0 and h > 0 and x + w <= width and y + h <= height
        if area is None or area["name"] != SPRITE_NAME or not inside:
            problems.append(f"cue {index} points at {cue.payload!r}, not inside the sprite")
    if abs(previous_end - stills.duration_s) > tolerance_s:
        problems.append(f"cues end at {previous_end:.3f}s, not {stills.duration_s:.3f}s")
    return problems


def check(stills: Stills, tolerance_s: float) -> None:
    """Raise OutputInvalid naming every problem with the poster, the sprite and the VTT."""
    files = stills.files
    poster = (stills.poster_width, stills.poster_height)
    problems = _image_problems(files.poster, "poster", poster)
    problems += _image_problems(files.sprite, "sprite", stills.sprite_size)
    try:
        problems += _cue_problems(parse_vtt(files.vtt.read_text()), stills, tolerance_s)
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        problems.append(f"thumbnails VTT unreadable: {exc}")
    if problems:
        raise OutputInvalid("stills failed the publish gate: " + "; ".join(problems))
