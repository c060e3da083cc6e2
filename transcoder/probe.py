"""ffprobe: run it (a thin async shell) and turn its JSON into ``MediaInfo`` (pure).

Failures are classified here, at the edge, into reason codes: what ffprobe says about a broken
upload is permanent; what it says about the network is retryable.
"""

from __future__ import annotations

import asyncio
import json
import re
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from transcoder.errors import AwsUnavailable, FfmpegFailed, InputRejected, TranscoderError
from transcoder.job import Reason

IMAGE_FORMATS = re.compile(r"(^|,)(image2|\w+_pipe|gif|apng|webp_pipe)(,|$)")
HDR_TRANSFERS = frozenset({"smpte2084", "arib-std-b67"})
INTERLACED_ORDERS = frozenset({"tt", "bb", "tb", "bt"})


@dataclass(frozen=True, slots=True)
class MediaInfo:
    """The facts about a media file that planning, verification and the job record need."""

    container: str
    duration_s: float
    size_bytes: int
    video_index: int
    video_codec: str
    width: int
    height: int
    sar: Fraction
    rotation: int
    fps: float
    pix_fmt: str
    color_transfer: str | None
    color_primaries: str | None
    field_order: str | None
    frame_count: int | None
    audio_index: int | None
    audio_codec: str | None
    audio_streams: int
    video_streams: int

    @property
    def display_width(self) -> int:
        width = round(self.width * self.sar)
        return self.height if self.rotation % 180 else width

    @property
    def display_height(self) -> int:
        width = round(self.width * self.sar)
        return width if self.rotation % 180 else self.height

    @property
    def is_hdr(self) -> bool:
        return self.color_transfer in HDR_TRANSFERS

    @property
    def is_interlaced(self) -> bool:
        return self.field_order in INTERLACED_ORDERS


def _ratio(text: str | None) -> Fraction | None:
    if not text or text in ("0/0", "N/A"):
        return None
    try:
        value = Fraction(text.replace(":", "/"))
    except (ValueError, ZeroDivisionError):
        return None
    return value if value > 0 else None


def _float(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if number > 0 else None


def rotation_of(stream: dict[str, Any]) -> int:
    """Displayed rotation in degrees clockwise: the display matrix wins over the legacy tag."""
    for side in stream.get("side_data_list", []):
        if "rotation" in side:
            return int(-float(side["rotation"])) % 360
    tag = stream.get("tags", {}).get("rotate")
    return int(float(tag)) % 360 if tag else 0


def _default_stream(streams: list[dict[str, Any]]) -> dict[str, Any] | None:
    flagged = [s for s in streams if s.get("disposition", {}).get("default")]
    candidates = flagged or streams
    return candidates[0] if candidates else None


def parse(data: dict[str, Any], *, size_bytes: int) -> MediaInfo:
    """ffprobe JSON -> MediaInfo, or InputRejected with the reason the upload is not a video."""
    fmt = data.get("format", {})
    streams = data.get("streams", [])
    videos = [
        s
        for s in streams
        if s.get("codec_type") == "video" and not s.get("disposition", {}).get("attached_pic")
    ]
    audios = [s for s in streams if s.get("codec_type") == "audio"]
    container = str(fmt.get("format_name", "unknown"))
    if not videos:
        raise InputRejected("the file has no video stream", reason=Reason.NO_VIDEO_STREAM)
    video = _default_stream(videos)
    assert video is not None
    duration = _float(fmt.get("duration")) or _float(video.get("duration"))
    if IMAGE_FORMATS.search(container) or not duration:
        raise InputRejected(f"a still image or unknown length ({container})")
    codec = video.get("codec_name")
    if not codec or not video.get("width") or not video.get("height"):
        raise InputRejected(
            f"video codec {video.get('codec_tag_string', 'unknown')!r} is not supported",
            reason=Reason.UNSUPPORTED_CODEC,
        )
    fps = _ratio(video.get("avg_frame_rate")) or _ratio(video.get("r_frame_rate")) or Fraction(25)
    audio = _default_stream(audios)
    frames = video.get("nb_frames")
    return MediaInfo(
        container=container,
        duration_s=duration,
        size_bytes=size_bytes,
        video_index=int(video["index"]),
        video_codec=str(codec),
        width=int(video["width"]),
        height=int(video["height"]),
        sar=_ratio(video.get("sample_aspect_ratio")) or Fraction(1),
        rotation=rotation_of(video),
        fps=float(fps),
        pix_fmt=str(video.get("pix_fmt", "unknown")),
        color_transfer=video.get("color_transfer"),
        color_primaries=video.get("color_primaries"),
        field_order=video.get("field_order"),
        frame_count=int(str(frames)) if str(frames).isdigit() else None,
        audio_index=int(audio["index"]) if audio else None,
        audio_codec=str(audio.get("codec_name")) if audio else None,
        audio_streams=len(audios),
        video_streams=len(videos),
    )


NETWORK_SIGNS = re.compile(
    r"Connection (refused|reset|timed out)|timed out|I/O error|Server returned 5\d\d|"
    r"Server returned 403|Failed to resolve|Network is unreachable|End of file.*http",
    re.IGNORECASE,
)


def classify_failure(stderr: str, returncode: int, *, stage: str) -> TranscoderError:
    """Map an ffprobe/ffmpeg failure to our tree. Unknown failures are retryable."""
    tail = stderr.strip().splitlines()[-3:] if stderr.strip() else [f"exit status {returncode}"]
    detail = f"{stage}: " + " | ".join(tail)[:500]
    if "404 Not Found" in stderr or "Server returned 404" in stderr:
        return InputRejected(detail, reason=Reason.SOURCE_NOT_FOUND)
    if NETWORK_SIGNS.search(stderr):
        return AwsUnavailable(detail)
    if "moov atom not found" in stderr:
        return InputRejected(detail, reason=Reason.TRUNCATED)
    if "Invalid data found when processing input" in stderr and stage == "probe":
        return InputRejected(detail, reason=Reason.NOT_A_VIDEO)
    if re.search(r"Decoder \(codec \w+\) not found|unsupported codec", stderr, re.IGNORECASE):
        return InputRejected(detail, reason=Reason.UNSUPPORTED_CODEC)
    if "No space left on device" in stderr:
        return FfmpegFailed(detail, reason=Reason.SCRATCH_FULL)
    if returncode < 0:
        return FfmpegFailed(detail, reason=Reason.FFMPEG_KILLED)
    return FfmpegFailed(detail)


async def run(url: str, *, timeout_s: float, ffprobe: str = "ffprobe") -> dict[str, Any]:
    """Run ffprobe on a URL or path and return its JSON; classified errors on failure."""
    process = await asyncio.create_subprocess_exec(
        ffprobe,
        *("-v", "error", "-print_format", "json", "-show_format", "-show_streams"),
        *("-rw_timeout", "30000000", url),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=timeout_s)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise FfmpegFailed(f"ffprobe did not answer within {timeout_s:.0f} s") from None
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    if process.returncode != 0:
        returncode = process.returncode if process.returncode is not None else -1
        raise classify_failure(stderr.decode(errors="replace"), returncode, stage="probe")
    result: dict[str, Any] = json.loads(stdout or b"{}")
    return result
