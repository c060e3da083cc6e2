"""The publish gate: a rendition is checked with ffprobe before the job may be marked COMPLETED.

A zero exit from ffmpeg is not success. Each output must have exactly one H.264 High ``yuv420p``
progressive video stream at the planned size, with square pixels and no rotation left; AAC audio
exactly when the source had audio, starting and ending with the video; the source's duration
(within 0.1 s or two frames); a frame count that matches its duration; BT.709 tags when the source
was HDR or BT.2020; and ``moov`` before ``mdat`` so players can start streaming at once.

Before the gate, ``check_complete`` tells a source that ends early (its container promises more
than the decoder found: a file cut short) from an encode that went wrong; the first is a permanent
``truncated`` rejection, the second a retryable ``output_invalid``.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transcoder.domain.errors import InputRejected, OutputInvalid
from transcoder.domain.job import Reason
from transcoder.media.ladder import Plan, Target
from transcoder.media.probe import INTERLACED_ORDERS, MediaInfo, rotation_of

BT709 = "bt709"


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


def tolerance_s(source: MediaInfo) -> float:
    """How far a rendition's duration may stray from the source's: 0.1 s or two frames."""
    return max(0.1, 2 / max(source.fps, 1))


def _number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return 0.0


def _streams(probe: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [s for s in probe.get("streams", []) if s.get("codec_type") == kind]


def duration_of(probe: dict[str, Any]) -> float:
    """The output's duration: the container's, else its video stream's."""
    videos = _streams(probe, "video")
    stream_duration = _number(videos[0].get("duration")) if videos else 0.0
    return _number(probe.get("format", {}).get("duration")) or stream_duration


def check_complete(probe: dict[str, Any], source: MediaInfo) -> None:
    """Raise InputRejected(truncated) when decoding stopped far short of the declared duration.

    ffmpeg exits 0 on a file cut mid-payload ("partial file"): it encodes what is there. A
    rendition short by more than 10 % (at most 1 s) of what the container declares is therefore
    the source's fault, decided now rather than retried.
    """
    decoded = duration_of(probe)
    allowed = max(tolerance_s(source), min(1.0, 0.1 * source.duration_s))
    if source.duration_s - decoded > allowed:
        raise InputRejected(
            f"the source declares {source.duration_s:.3f} s but only {decoded:.3f} s could be "
            "decoded: the file is cut short",
            reason=Reason.TRUNCATED,
        )


def _video_problems(video: dict[str, Any], target: Target, plan: Plan) -> list[str]:
    problems: list[str] = []
    if video.get("codec_name") != "h264" or video.get("pix_fmt") != "yuv420p":
        problems.append(f"video is {video.get('codec_name')}/{video.get('pix_fmt')}")
    if not str(video.get("profile", "")).startswith("High"):
        problems.append(f"H.264 profile {video.get('profile')!r}, expected High")
    size = (int(video.get("width", 0)), int(video.get("height", 0)))
    if size != (target.width, target.height):
        problems.append(f"size {size[0]}x{size[1]} != planned {target.width}x{target.height}")
    if video.get("sample_aspect_ratio", "1:1") not in ("1:1", "0:1", "N/A"):
        problems.append(f"pixels are not square (SAR {video.get('sample_aspect_ratio')})")
    if rotation_of(video):
        problems.append(f"rotation {rotation_of(video)} left in the output")
    if video.get("field_order") in INTERLACED_ORDERS:
        problems.append(f"field order {video.get('field_order')}, expected progressive")
    if plan.to_bt709:
        tags = [video.get(k) for k in ("color_primaries", "color_transfer", "color_space")]
        if tags != [BT709] * 3:
            problems.append(f"colour tags {tags} after conversion, expected bt709")
    return problems


def _timing_problems(probe: dict[str, Any], source: MediaInfo, rate: float) -> list[str]:
    problems: list[str] = []
    tolerance = tolerance_s(source)
    duration = duration_of(probe)
    if abs(duration - source.duration_s) > tolerance:
        problems.append(f"duration {duration:.3f}s != source {source.duration_s:.3f}s")
    video = _streams(probe, "video")[0]
    video_s = _number(video.get("duration")) or duration
    frames = video.get("nb_frames")
    expected = video_s * rate
    if str(frames).isdigit() and abs(int(str(frames)) - expected) > max(2, 0.01 * expected):
        problems.append(f"{frames} frames in {video_s:.3f}s at {rate:.3f} fps")
    for audio in _streams(probe, "audio"):
        offset = _number(audio.get("start_time")) - _number(video.get("start_time"))
        skew = abs(offset - source.audio_offset_s)
        drift = abs(_number(audio.get("duration")) - video_s) - _source_drift(source)
        if skew > tolerance or drift > tolerance:
            problems.append(f"audio out of sync with video (start {skew:.3f}s, end {drift:.3f}s)")
    return problems


def _source_drift(source: MediaInfo) -> float:
    """How much longer or shorter the source's audio already was than its video."""
    if source.audio_duration_s is None or source.video_duration_s is None:
        return 0.0
    return abs(source.audio_duration_s - source.video_duration_s)


def check(
    path: Path, probe: dict[str, Any], target: Target, source: MediaInfo, plan: Plan
) -> Verified:
    """Raise OutputInvalid naming every problem with the rendition at ``path``."""
    videos = _streams(probe, "video")
    audios = _streams(probe, "audio")
    if len(videos) != 1:
        raise OutputInvalid(f"{target.name}: {len(videos)} video streams, expected 1")
    problems = _video_problems(videos[0], target, plan)
    expected_audio = 1 if plan.audio_index is not None else 0
    if len(audios) != expected_audio or any(a.get("codec_name") != "aac" for a in audios):
        problems.append(f"{len(audios)} audio streams, expected {expected_audio} AAC")
    problems += _timing_problems(probe, source, plan.output_fps or source.fps)
    atoms = top_level_atoms(path)
    if "moov" not in atoms or "mdat" not in atoms or atoms.index("moov") > atoms.index("mdat"):
        problems.append(f"not faststart (top-level boxes {atoms[:6]})")
    if problems:
        raise OutputInvalid(f"{target.name} failed the publish gate: " + "; ".join(problems))
    frames = str(videos[0].get("nb_frames"))
    return Verified(
        width=int(videos[0]["width"]),
        height=int(videos[0]["height"]),
        duration_s=round(duration_of(probe), 3),
        bitrate_kbps=int(_number(probe.get("format", {}).get("bit_rate")) / 1000),
        frames=int(frames) if frames.isdigit() else None,
    )
