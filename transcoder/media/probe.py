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

from transcoder.domain.errors import AwsUnavailable, FfmpegFailed, InputRejected, TranscoderError
from transcoder.domain.job import Reason

IMAGE_FORMATS = re.compile(r"(^|,)(image2|\w+_pipe|gif|apng|webp_pipe)(,|$)")
HDR_TRANSFERS = frozenset({"smpte2084", "arib-std-b67"})
WIDE_PRIMARIES = frozenset({"bt2020"})
INTERLACED_ORDERS = frozenset({"tt", "bb", "tb", "bt"})
# More than this fraction of frames failing to decode makes ffmpeg (``-max_error_rate``) exit with
# status 69, reported as ``undecodable``; a few damaged packets in a long capture are concealed.
MAX_DECODE_ERROR_RATE = 0.1
EXIT_DECODE_ERRORS = 69


@dataclass(frozen=True, slots=True)
class MediaInfo:
    """The facts about a media file that planning, verification and the job record need.

    ``fps`` is the average frame rate; ``base_fps`` is ffprobe's ``r_frame_rate`` (the rate every
    timestamp fits on), which is above the average when the frame rate varies.
    """

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
    base_fps: float | None = None
    color_space: str | None = None
    video_duration_s: float | None = None
    audio_duration_s: float | None = None
    audio_offset_s: float = 0.0  # when the audio starts relative to the video (seconds)

    @property
    def display_width(self) -> int:
        """Width as shown: non-square pixels stretched, then the display rotation applied."""
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
    def is_wide_gamut(self) -> bool:
        return self.color_primaries in WIDE_PRIMARIES or self.is_hdr

    @property
    def is_interlaced(self) -> bool:
        return self.field_order in INTERLACED_ORDERS

    @property
    def is_vfr(self) -> bool:
        """Timestamps on a finer grid than the average rate: frames come at a varying pace.

        Field-coded interlaced video reports ``r_frame_rate`` at the field rate (twice the frame
        rate); that is not variable.
        """
        if not self.base_fps or self.base_fps <= self.fps * 1.02:
            return False
        return not (self.is_interlaced and abs(self.base_fps - 2 * self.fps) < 0.02 * self.fps)


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
    """Displayed rotation in degrees clockwise, a multiple of 90.

    The display matrix (``side_data_list``; ffprobe reports it counter-clockwise) wins over the
    legacy ``rotate`` tag (clockwise) that ffprobe before 5.0 and some muxers still write.
    """
    for side in stream.get("side_data_list", []):
        if "rotation" in side:
            return _quarter_turns(-float(side["rotation"]))
    tag = stream.get("tags", {}).get("rotate")
    try:
        return _quarter_turns(float(tag)) if tag else 0
    except ValueError:
        return 0


def _quarter_turns(degrees: float) -> int:
    return (round(degrees / 90) * 90) % 360


def _default_stream(streams: list[dict[str, Any]]) -> dict[str, Any] | None:
    flagged = [s for s in streams if s.get("disposition", {}).get("default")]
    candidates = flagged or streams
    return candidates[0] if candidates else None


def _video_streams(streams: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        s
        for s in streams
        if s.get("codec_type") == "video" and not s.get("disposition", {}).get("attached_pic")
    ]


def _checked_video(data: dict[str, Any]) -> tuple[dict[str, Any], float]:
    """The stream to transcode and the duration, or InputRejected saying why there is none."""
    fmt = data.get("format", {})
    video = _default_stream(_video_streams(data.get("streams", [])))
    if video is None:
        raise InputRejected("the file has no video stream", reason=Reason.NO_VIDEO_STREAM)
    container = str(fmt.get("format_name", "unknown"))
    duration = _float(fmt.get("duration")) or _float(video.get("duration"))
    if IMAGE_FORMATS.search(container) or not duration:
        raise InputRejected(f"a still image or unknown length ({container})")
    if not video.get("codec_name") or not video.get("width") or not video.get("height"):
        raise InputRejected(
            f"video codec {video.get('codec_tag_string', 'unknown')!r} is not supported",
            reason=Reason.UNSUPPORTED_CODEC,
        )
    return video, duration


def parse(data: dict[str, Any], *, size_bytes: int) -> MediaInfo:
    """ffprobe JSON -> MediaInfo, or InputRejected with the reason the upload is not a video."""
    video, duration = _checked_video(data)
    streams = data.get("streams", [])
    audios = [s for s in streams if s.get("codec_type") == "audio"]
    audio = _default_stream(audios)
    average = _ratio(video.get("avg_frame_rate"))
    base = _ratio(video.get("r_frame_rate"))
    frames = video.get("nb_frames")
    return MediaInfo(
        container=str(data.get("format", {}).get("format_name", "unknown")),
        duration_s=duration,
        size_bytes=size_bytes,
        video_index=int(video["index"]),
        video_codec=str(video["codec_name"]),
        width=int(video["width"]),
        height=int(video["height"]),
        sar=_ratio(video.get("sample_aspect_ratio")) or Fraction(1),
        rotation=rotation_of(video),
        fps=float(average or base or 25),
        pix_fmt=str(video.get("pix_fmt", "unknown")),
        color_transfer=video.get("color_transfer"),
        color_primaries=video.get("color_primaries"),
        field_order=video.get("field_order"),
        frame_count=int(str(frames)) if str(frames).isdigit() else None,
        audio_index=int(audio["index"]) if audio else None,
        audio_codec=str(audio.get("codec_name")) if audio else None,
        audio_streams=len(audios),
        video_streams=len(_video_streams(streams)),
        base_fps=float(base) if base else None,
        color_space=video.get("color_space"),
        video_duration_s=_float(video.get("duration")),
        audio_duration_s=_float(audio.get("duration")) if audio else None,
        audio_offset_s=_offset(audio, video),
    )


def _offset(audio: dict[str, Any] | None, video: dict[str, Any]) -> float:
    """Audio start minus video start, as the source has it (0 when either is unknown)."""
    try:
        return round(float(audio["start_time"]) - float(video["start_time"]), 6) if audio else 0.0
    except (KeyError, TypeError, ValueError):
        return 0.0


NETWORK_SIGNS = re.compile(
    r"Connection (refused|reset|timed out)|timed out|I/O error|Server returned 5\d\d|"
    r"Server returned 403|Failed to resolve|Network is unreachable|End of file.*http",
    re.IGNORECASE,
)
# The demuxer was chosen by the file name alone: the bytes are not that format at all.
MISDETECTED = "misdetection possible"


def classify_failure(stderr: str, returncode: int, *, stage: str) -> TranscoderError:
    """Map an ffprobe/ffmpeg failure to our tree. Unknown failures are retryable."""
    tail = stderr.strip().splitlines()[-3:] if stderr.strip() else [f"exit status {returncode}"]
    detail = f"{stage}: " + " | ".join(tail)[:500]
    if "404 Not Found" in stderr or "Server returned 404" in stderr:
        return InputRejected(detail, reason=Reason.SOURCE_NOT_FOUND)
    if NETWORK_SIGNS.search(stderr):
        return AwsUnavailable(detail)
    rejected = _input_reason(stderr, returncode, stage=stage)
    if rejected is not None:
        return InputRejected(f"{EXPLANATIONS[rejected]} ({detail})", reason=rejected)
    if "No space left on device" in stderr:
        return FfmpegFailed(detail, reason=Reason.SCRATCH_FULL)
    if returncode < 0:
        return FfmpegFailed(detail, reason=Reason.FFMPEG_KILLED)
    return FfmpegFailed(detail)


EXPLANATIONS = {
    Reason.TRUNCATED: "the file ends before its index (moov) was written: it was cut short",
    Reason.NOT_A_VIDEO: "the bytes are not a media file ffmpeg can read",
    Reason.UNSUPPORTED_CODEC: "no decoder for the video codec",
    Reason.UNDECODABLE: (
        f"more than {MAX_DECODE_ERROR_RATE:.0%} of the frames could not be decoded: "
        "the payload is damaged"
    ),
}


def _input_reason(stderr: str, returncode: int, *, stage: str) -> Reason | None:
    """The permanent reason an ffprobe/ffmpeg failure pins on the upload, if any."""
    if "moov atom not found" in stderr:
        # An MP4 whose index never arrived (cut short) vs bytes that only had an .mp4 name.
        return Reason.NOT_A_VIDEO if MISDETECTED in stderr else Reason.TRUNCATED
    if "Invalid data found when processing input" in stderr and stage == "probe":
        return Reason.NOT_A_VIDEO
    if re.search(r"Decoder \(codec \w+\) not found|unsupported codec", stderr, re.IGNORECASE):
        return Reason.UNSUPPORTED_CODEC
    if returncode == EXIT_DECODE_ERRORS and stage == "transcode":
        return Reason.UNDECODABLE
    return None


async def run(url: str, *, timeout_s: float, ffprobe: str = "ffprobe") -> dict[str, Any]:
    """Run ffprobe on a URL or path and return its JSON; classified errors on failure.

    The log level is ``warning`` so that a misdetected format (a text file named ``.mp4``) is
    told apart from a truncated MP4 when both end in "moov atom not found".
    """
    process = await asyncio.create_subprocess_exec(
        ffprobe,
        *("-v", "warning", "-print_format", "json", "-show_format", "-show_streams"),
        *("-rw_timeout", "30000000", url),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(timeout_s):
            stdout, stderr = await process.communicate()
    except TimeoutError:
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
