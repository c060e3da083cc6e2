"""The poster and the thumbnails as a player sees them: downloaded, measured with ffprobe/ffmpeg,
the WebVTT read with a parser of its own (not the product's), checked against the job record."""

from __future__ import annotations

import json
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transcoder.aws.storage import Storage
from transcoder.domain.job import poster_key, thumbnails_prefix

CUE = re.compile(
    r"(\d\d):(\d\d):(\d\d)\.(\d{3}) --> (\d\d):(\d\d):(\d\d)\.(\d{3})\n"
    r"sprite\.jpg#xywh=(\d+),(\d+),(\d+),(\d+)"
)


@dataclass(frozen=True, slots=True)
class Stills:
    poster: Path
    sprite: Path
    vtt: Path


def picture_size(path: Path) -> tuple[int, int]:
    command = ["ffprobe", "-v", "error", "-print_format", "json", "-show_streams", str(path)]
    done = subprocess.run(command, capture_output=True, check=True, timeout=60)
    stream = json.loads(done.stdout)["streams"][0]
    return int(stream["width"]), int(stream["height"])


def picture_stat(path: Path, key: str) -> float:
    """A signalstats value (``YAVG``, ``SATAVG``...) of a picture, on the 8-bit limited scale."""
    graph = f"format=yuv420p,signalstats,metadata=print:key=lavfi.signalstats.{key}:file=-"
    command = ["ffmpeg", "-nostdin", "-v", "error", "-i", str(path), "-vf", graph, "-f", "null"]
    done = subprocess.run([*command, "-"], capture_output=True, check=True, timeout=60)
    values = [float(v) for v in re.findall(rf"{key}=([\d.]+)", done.stdout.decode())]
    return sum(values) / max(1, len(values))


def cues(text: str) -> list[tuple[float, float, int, int, int, int]]:
    """(start_s, end_s, x, y, w, h) of every cue."""
    found = []
    for match in CUE.finditer(text):
        numbers = [int(v) for v in match.groups()]
        start = numbers[0] * 3600 + numbers[1] * 60 + numbers[2] + numbers[3] / 1000
        end = numbers[4] * 3600 + numbers[5] * 60 + numbers[6] + numbers[7] / 1000
        x, y, w, h = numbers[8:]
        found.append((start, end, x, y, w, h))
    return found


async def download(storage: Storage, user_id: str, video_id: str, folder: Path) -> Stills:
    """The poster, sprite and VTT at their layout keys (fails if one is missing)."""
    prefix = thumbnails_prefix(user_id, video_id)
    found = Stills(
        folder / f"{video_id}-poster.jpg",
        folder / f"{video_id}-sprite.jpg",
        folder / f"{video_id}.vtt",
    )
    await storage.download(poster_key(user_id, video_id), found.poster)
    await storage.download(prefix + "sprite.jpg", found.sprite)
    await storage.download(prefix + "thumbnails.vtt", found.vtt)
    return found


def problems(
    record: dict[str, Any], found: Stills, poster_size: tuple[int, int], tolerance_s: float
) -> list[str]:
    """What is wrong with the published stills of ``record`` (a COMPLETED job record)."""
    wrong: list[str] = []
    poster, thumbnails = record.get("poster") or {}, record.get("thumbnails") or {}
    duration_s = float(record["source"]["duration_s"])
    if picture_size(found.poster) != poster_size or (
        (poster.get("width"), poster.get("height")) != poster_size
    ):
        wrong.append(f"poster {picture_size(found.poster)} / {poster}, expected {poster_size}")
    tile = (thumbnails.get("tile_width", 0), thumbnails.get("tile_height", 0))
    sprite = picture_size(found.sprite)
    grid = (thumbnails.get("columns", 0) * tile[0], thumbnails.get("rows", 0) * tile[1])
    if sprite != grid:
        wrong.append(f"sprite {sprite}, expected {grid} for {thumbnails}")
    if (tile[0] > tile[1]) != (poster_size[0] > poster_size[1]):
        wrong.append(f"tiles {tile} not in the poster's orientation {poster_size}")
    listed = cues(found.vtt.read_text())
    if not found.vtt.read_text().startswith("WEBVTT") or len(listed) != thumbnails.get("count"):
        wrong.append(f"{len(listed)} cues, record says {thumbnails.get('count')}")
    end = 0.0
    for start, stop, x, y, w, h in listed:
        if abs(start - end) > 0.001 or stop <= start:
            wrong.append(f"cue {start}-{stop} does not follow {end}")
        if x + w > sprite[0] or y + h > sprite[1] or (w, h) != tile:
            wrong.append(f"cue {start}: {x},{y},{w},{h} outside the sprite {sprite}")
        end = stop
    if abs(end - duration_s) > tolerance_s:
        wrong.append(f"cues end at {end}, the source lasts {duration_s}")
    return wrong
