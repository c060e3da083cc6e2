"""Source facts for the pure-core tests: what ffprobe would say of a plain H.264 + AAC MP4."""

from __future__ import annotations

import dataclasses
from fractions import Fraction
from typing import Any

from transcoder.media.probe import MediaInfo

PLAIN_1080P = MediaInfo(
    container="mov,mp4,m4a,3gp,3g2,mj2",
    duration_s=10.0,
    size_bytes=1_000_000,
    video_index=0,
    video_codec="h264",
    width=1920,
    height=1080,
    sar=Fraction(1),
    rotation=0,
    fps=25.0,
    pix_fmt="yuv420p",
    color_transfer=None,
    color_primaries=None,
    field_order="progressive",
    frame_count=250,
    audio_index=1,
    audio_codec="aac",
    audio_streams=1,
    video_streams=1,
    base_fps=25.0,
)


def media(**changes: Any) -> MediaInfo:
    """The plain 1080p source with ``changes`` applied."""
    return dataclasses.replace(PLAIN_1080P, **changes)
