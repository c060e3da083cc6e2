"""The ladder planner: source facts + configured rungs -> what to encode. Pure, tested by equality.

Rules (DESIGN.md, media rules; docs/media.md):

* Sizes are measured on the *displayed* picture: after stretching non-square pixels and after the
  rotation ffmpeg applies on decode (display matrix or legacy ``rotate`` tag). A portrait phone
  clip yields portrait renditions whose short side is the rung's number (720p = 720 pixels wide
  when portrait); nothing is letterboxed and no rotation is left in the output.
* Never upscale: a rung whose short side exceeds the source's is skipped with a reason. If no rung
  fits, the lowest rung is produced at the source's own displayed size (rounded down to even) so
  every valid upload is playable.
* Dimensions are even (yuv420p needs it), pixels square, 8-bit ``yuv420p`` from any input.
* HDR (PQ or HLG) is tone-mapped to BT.709 SDR; BT.2020 SDR is converted to BT.709.
* Interlaced sources are deinterlaced. The output frame rate is constant: above ``max_fps`` it is
  divided by a whole number (120 -> 60); a variable-rate source is resampled to its base rate,
  which keeps every frame's time, so audio stays in sync and the duration is unchanged.
* GOP closed at ``gop_s`` seconds of the output rate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from transcoder.domain.rungs import Rung
from transcoder.media.probe import MediaInfo


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
class ColourIn:
    """The source's colour description, handed to zscale so it never has to guess."""

    transfer: str
    primaries: str
    matrix: str
    tonemap: bool  # PQ/HLG: linearise, tone-map, re-encode as BT.709


@dataclass(frozen=True, slots=True)
class Plan:
    """Everything the FFmpeg argument builder needs, decided once."""

    targets: tuple[Target, ...]
    skipped: tuple[Skipped, ...]
    video_index: int
    audio_index: int | None
    output_fps: float | None  # None keeps the source's (constant) timing
    keyint: int
    deinterlace: bool
    colour: ColourIn | None = None  # None: already BT.709/BT.601 SDR, left as it is

    @property
    def to_bt709(self) -> bool:
        """The output is converted (and tagged) to BT.709 from HDR or BT.2020."""
        return self.colour is not None


def even(value: float) -> int:
    """Round to the nearest even integer, at least 2."""
    return max(2, 2 * round(value / 2))


def even_down(value: int) -> int:
    """Round down to even, at least 2."""
    return max(2, value // 2 * 2)


def fit(display_w: int, display_h: int, short_side: int) -> tuple[int, int]:
    """Scale so the short side is ``short_side``; the long side keeps the aspect, rounded even.

    The long side never exceeds the source's own (rounded down to even): no upscaling by rounding.
    """
    if display_w <= display_h:
        return short_side, min(even(display_h * short_side / display_w), even_down(display_h))
    return min(even(display_w * short_side / display_h), even_down(display_w)), short_side


def capped_fps(fps: float, max_fps: float) -> float | None:
    """Divide high frame rates by a whole number (120 -> 60, 100 -> 50) to keep motion regular."""
    if fps <= max_fps + 0.01:
        return None
    return fps / math.ceil(fps / max_fps - 0.001)


def output_rate(media: MediaInfo, max_fps: float) -> float | None:
    """The constant output frame rate to force, or None to keep the source's own timing."""
    if media.is_vfr and media.base_fps:
        return capped_fps(media.base_fps, max_fps) or media.base_fps
    return capped_fps(media.fps, max_fps)


def colour_in(media: MediaInfo) -> ColourIn | None:
    """How to convert the source to BT.709, or None when it already is SDR BT.709/BT.601."""
    if not media.is_wide_gamut:
        return None
    return ColourIn(
        transfer=media.color_transfer or "bt2020-10",
        primaries=media.color_primaries or "bt2020",
        matrix=media.color_space or "bt2020nc",
        tonemap=media.is_hdr,
    )


def _target(rung: Rung, width: int, height: int) -> Target:
    return Target(rung.name, width, height, rung.crf, rung.maxrate_kbps, rung.bufsize_kbps)


def targets(
    display_w: int, display_h: int, rungs: list[Rung]
) -> tuple[tuple[Target, ...], tuple[Skipped, ...]]:
    """The renditions for a picture shown at ``display_w`` x ``display_h`` (rungs sorted)."""
    short = min(display_w, display_h)
    made = [
        _target(r, *fit(display_w, display_h, r.short_side)) for r in rungs if r.short_side <= short
    ]
    skipped = [
        Skipped(r.name, f"source short side {short}px < {r.short_side}px (no upscaling)")
        for r in rungs
        if r.short_side > short
    ]
    if not made and rungs:
        # Below the lowest rung: one rendition at the source's own size, so it still plays.
        made = [_target(rungs[0], even_down(display_w), even_down(display_h))]
        skipped = skipped[1:]
    return tuple(made), tuple(skipped)


def plan(
    media: MediaInfo,
    ladder: tuple[Rung, ...],
    wanted: tuple[str, ...],
    *,
    max_fps: float,
    gop_s: float,
) -> Plan:
    """Decide the renditions for ``media``; ``wanted`` names the rungs the job asked for."""
    rungs = sorted((r for r in ladder if r.name in wanted), key=lambda r: r.short_side)
    made, skipped = targets(media.display_width, media.display_height, rungs)
    out_fps = output_rate(media, max_fps)
    return Plan(
        targets=made,
        skipped=skipped,
        video_index=media.video_index,
        audio_index=media.audio_index,
        output_fps=out_fps,
        keyint=max(1, round(gop_s * (out_fps or media.fps))),
        deinterlace=media.is_interlaced,
        colour=colour_in(media),
    )
