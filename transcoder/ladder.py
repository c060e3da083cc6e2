"""The ladder planner: source facts + configured rungs -> what to encode. Pure, tested by equality.

Rules (DESIGN.md, media rules):

* Sizes are measured on the *displayed* picture: after the rotation ffmpeg applies on decode and
  after stretching non-square pixels. A portrait phone clip yields portrait renditions whose short
  side is the rung's number (720p = 720 pixels wide when portrait).
* Never upscale: a rung whose short side exceeds the source's is skipped with a reason. If no rung
  fits, the lowest rung is produced at the source's own size so every valid upload is playable.
* Dimensions are even (yuv420p needs it), pixels square, frame rate capped, GOP closed at ``gop_s``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from transcoder.config import Rung
from transcoder.probe import MediaInfo


@dataclass(frozen=True, slots=True)
class Target:
    """One rendition to encode."""

    name: str
    width: int
    height: int
    crf: int
    maxrate_kbps: int
    bufsize_kbps: int


@dataclass(frozen=True, slots=True)
class Skipped:
    name: str
    reason: str


@dataclass(frozen=True, slots=True)
class Plan:
    """Everything the FFmpeg argument builder needs, decided once."""

    targets: tuple[Target, ...]
    skipped: tuple[Skipped, ...]
    video_index: int
    audio_index: int | None
    output_fps: float | None  # None keeps the source's timing
    keyint: int
    deinterlace: bool
    tonemap: bool


def even(value: float) -> int:
    """Round to the nearest even integer, at least 2."""
    return max(2, 2 * round(value / 2))


def fit(display_w: int, display_h: int, short_side: int) -> tuple[int, int]:
    """Scale so the short side is ``short_side``; the long side keeps the aspect, rounded even."""
    if display_w <= display_h:
        return short_side, even(display_h * short_side / display_w)
    return even(display_w * short_side / display_h), short_side


def capped_fps(fps: float, max_fps: float) -> float | None:
    """Divide high frame rates by a whole number (120 -> 60, 100 -> 50) to keep motion regular."""
    if fps <= max_fps + 0.01:
        return None
    return fps / math.ceil(fps / max_fps - 0.001)


def plan(
    media: MediaInfo,
    ladder: tuple[Rung, ...],
    wanted: tuple[str, ...],
    *,
    max_fps: float,
    gop_s: float,
) -> Plan:
    """Decide the renditions for ``media``; ``wanted`` names the rungs the job asked for."""
    dw, dh = media.display_width, media.display_height
    short = min(dw, dh)
    rungs = sorted((r for r in ladder if r.name in wanted), key=lambda r: r.short_side)
    targets: list[Target] = []
    skipped: list[Skipped] = []
    for rung in rungs:
        if rung.short_side > short:
            skipped.append(Skipped(rung.name, f"source short side {short}px < {rung.short_side}px"))
            continue
        width, height = fit(dw, dh, rung.short_side)
        targets.append(
            Target(rung.name, width, height, rung.crf, rung.maxrate_kbps, rung.bufsize_kbps)
        )
    if not targets and rungs:
        lowest = rungs[0]
        width, height = max(2, dw // 2 * 2), max(2, dh // 2 * 2)
        targets.append(
            Target(lowest.name, width, height, lowest.crf, lowest.maxrate_kbps, lowest.bufsize_kbps)
        )
        skipped = [s for s in skipped if s.name != lowest.name]
    out_fps = capped_fps(media.fps, max_fps)
    return Plan(
        targets=tuple(targets),
        skipped=tuple(skipped),
        video_index=media.video_index,
        audio_index=media.audio_index,
        output_fps=out_fps,
        keyint=max(1, round(gop_s * (out_fps or media.fps))),
        deinterlace=media.is_interlaced,
        tonemap=media.is_hdr,
    )
