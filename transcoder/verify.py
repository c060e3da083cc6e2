"""The publish gate: a rendition is checked with ffprobe before the job may be marked COMPLETED.

A zero exit from ffmpeg is not success. Each output must have exactly one H.264 ``yuv420p`` video
stream at the planned size with no rotation left, AAC audio exactly when the source had audio, the
source's duration (within 0.1 s or two frames), BT.709 tags when the source was HDR, and ``moov``
before ``mdat`` so players can start streaming at once.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transcoder.errors import OutputInvalid
from transcoder.ladder import Plan, Target
from transcoder.probe import MediaInfo, rotation_of


@dataclass(frozen=True, slots=True)
class Verified:
    width: int
    height: int
    duration_s: float
    bitrate_kbps: int
    frames: int | None


def top_level_atoms(path: Path, limit: int = 64) -> list[str]:
    """The MP4's top-level box types in file order (reads only the box headers)."""
    atoms: list[str] = []
    size_total = path.stat().st_size
    with path.open("rb") as handle:
        offset = 0
        while offset < size_total and len(atoms) < limit:
            handle.seek(offset)
            header = handle.read(16)
            if len(header) < 8:
                break
            size, kind = struct.unpack(">I4s", header[:8])
            if size == 1 and len(header) >= 16:
                size = struct.unpack(">Q", header[8:16])[0]
            elif size == 0:
                size = size_total - offset
            if size < 8:
                break
            atoms.append(kind.decode("latin-1"))
            offset += size
    return atoms


def check(
    path: Path, probe: dict[str, Any], target: Target, source: MediaInfo, plan: Plan
) -> Verified:
    """Raise OutputInvalid naming every problem with the rendition at ``path``."""
    problems: list[str] = []
    streams = probe.get("streams", [])
    videos = [s for s in streams if s.get("codec_type") == "video"]
    audios = [s for s in streams if s.get("codec_type") == "audio"]
    if len(videos) != 1:
        raise OutputInvalid(f"{target.name}: {len(videos)} video streams, expected 1")
    video = videos[0]
    if video.get("codec_name") != "h264" or video.get("pix_fmt") != "yuv420p":
        problems.append(f"video is {video.get('codec_name')}/{video.get('pix_fmt')}")
    size = (int(video.get("width", 0)), int(video.get("height", 0)))
    if size != (target.width, target.height):
        problems.append(f"size {size[0]}x{size[1]} != planned {target.width}x{target.height}")
    if rotation_of(video):
        problems.append(f"rotation {rotation_of(video)} left in the output")
    expected_audio = 1 if plan.audio_index is not None else 0
    if len(audios) != expected_audio or any(a.get("codec_name") != "aac" for a in audios):
        problems.append(f"{len(audios)} audio streams, expected {expected_audio} AAC")
    duration = float(probe.get("format", {}).get("duration") or 0)
    tolerance = max(0.1, 2 / max(source.fps, 1))
    if abs(duration - source.duration_s) > tolerance:
        problems.append(f"duration {duration:.3f}s != source {source.duration_s:.3f}s")
    if plan.tonemap and video.get("color_transfer") != "bt709":
        problems.append(f"transfer {video.get('color_transfer')} after tone-mapping, not bt709")
    atoms = top_level_atoms(path)
    if "moov" not in atoms or "mdat" not in atoms or atoms.index("moov") > atoms.index("mdat"):
        problems.append(f"not faststart (top-level boxes {atoms[:6]})")
    if problems:
        raise OutputInvalid(f"{target.name} failed the publish gate: " + "; ".join(problems))
    frames = video.get("nb_frames")
    return Verified(
        width=size[0],
        height=size[1],
        duration_s=round(duration, 3),
        bitrate_kbps=int(int(probe.get("format", {}).get("bit_rate") or 0) / 1000),
        frames=int(frames) if str(frames).isdigit() else None,
    )
