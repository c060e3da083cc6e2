"""HLS, poster and thumbnails from renditions that already exist (a stitched, chunked job).

A single pass writes each rendition's HLS stream and the stills from the one ffmpeg that encodes
the renditions (``hls.tee_slaves``, ``stills.outputs``). A stitched job (``chunks``, ``stitch``)
has only the faststart MP4s, so the rest is derived from them, and no video is encoded again:

* **HLS** (:func:`hls_args`): one ffmpeg reads every rendition's MP4 and copies its packets
  (``-c copy``) into that rendition's ``hls`` muxer, with the tee slaves' own options
  (``hls.muxer_options``): the same folders, ``init.mp4``, ``seg_%05d.m4s`` names and VOD
  playlists, so ``hls.check`` and ``stream.publish`` take the result as they take a single
  pass's. A copy can only cut where the MP4 has a sync sample; the renditions' GOPs are closed
  and ``keyint`` frames long (the stitch keeps the single pass's grid, ``stitch.check_stitched``)
  and ``hls_time`` is half a frame under one GOP, so every segment is one GOP, as in a single
  pass. Each variant carries its video and the AAC track of its own MP4: the tee's ``v:i,a``,
  since every rendition holds the same AAC packets.
* **Stills** (:func:`stills_args`): one decode of one rendition (``derive`` takes the smallest:
  the decode is nearly all this command costs), split into the two branches ``stills.outputs``
  scales to the planned poster and tile sizes. A rendition already is what those branches see in
  a single pass (deinterlaced, at the output rate, BT.709, upright); the poster, planned at the
  top rendition's size, is scaled up from the smallest one, so with a ladder of several rungs it
  is softer than a single pass's. A third branch goes to a ``null`` output, first: the image
  outputs are stamped 0 s, 1 s, 2 s (``stills._jpeg``), so without it ``-progress`` would not
  advance while the video is decoded and the stall detector would kill a healthy job.
* **Keyframes only** (:func:`keyframes_suffice`): a long video's tiles are seconds apart, and a
  rendition has a keyframe every GOP from 0. When a tile interval is at least one GOP, every cue
  holds a keyframe, so ffmpeg may decode keyframes alone (``-skip_frame nokey``, about a sixth of
  a full decode): tile *k* is then the first keyframe in its cue (at most one GOP after the
  cue's start) instead of its first frame, and the poster's candidates are keyframes. Short videos
  (1 s tiles: under 100 s) are decoded in full, and picked exactly as in a single pass.
* :func:`derive` runs both side by side, reports them as one stage (it advances when the slower
  one does), writes the WebVTT index and returns what ``publish.Encoded`` takes.

These ffmpegs read our own files: a failure says nothing about the upload, but ``encoder.run``'s
classification may pin a permanent input reason on it (``truncated`` for an MP4 without its
``moov``), so such a verdict is raised as a retryable ``FfmpegFailed`` instead.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Mapping
from pathlib import Path
from typing import Any

import ffmpeg

from transcoder.domain.errors import FfmpegFailed, InputRejected
from transcoder.media import encoder, verify
from transcoder.media.ffmpeg import ProgressSample
from transcoder.media.hls import HlsOutput, hls_time_s, muxer_options, playlist_path
from transcoder.media.hls import gop_s as planned_gop_s
from transcoder.media.ladder import Plan, Target
from transcoder.media.probe import MediaInfo
from transcoder.media.progress import Progress
from transcoder.media.stills import BRANCHES, Stills, vtt_text
from transcoder.media.stills import outputs as still_outputs
from transcoder.media.stills import plan as plan_stills

GLOBAL_ARGS = ("-nostdin", "-hide_banner", "-loglevel", "error", "-progress", "pipe:1", "-nostats")


def _compile(output: Any, binary: str) -> list[str]:
    args: list[str] = output.global_args(*GLOBAL_ARGS).compile(cmd=binary, overwrite_output=True)
    return args


def hls_args(
    plan: Plan, outputs: Mapping[str, Path], hls_output: HlsOutput, *, binary: str = "ffmpeg"
) -> list[str]:
    """One ffmpeg that copies every rendition's MP4 into its HLS stream (see the module doc)."""
    variants = []
    for target in plan.targets:
        source = ffmpeg.input(str(outputs[target.name]))
        streams = [source["v:0"]]
        if plan.audio_index is not None:
            streams.append(source["a:0"])
        variants.append(
            ffmpeg.output(
                *streams,
                str(playlist_path(hls_output, target)),
                format="hls",
                c="copy",
                map_metadata=-1,
                map_chapters=-1,
                **muxer_options(hls_output, target),
            )
        )
    return _compile(ffmpeg.merge_outputs(*variants), binary)


def stills_args(
    plan: Plan,
    still: Stills,
    source: Path,
    *,
    keyframes_only: bool = False,
    binary: str = "ffmpeg",
) -> list[str]:
    """The poster and the sprite from one decode of ``source``, a rendition of ``plan``.

    ``plan`` is what ``still`` was planned from (``stills.plan``), which holds every size used.
    ``keyframes_only``: decode the keyframes alone (only where :func:`keyframes_suffice`).
    """
    decode = {"skip_frame": "nokey"} if keyframes_only else {}
    video = ffmpeg.input(str(source), **decode)["v:0"].filter_multi_output("split", 1 + BRANCHES)
    # Frames and media time for -progress (see the module docstring); first, so it is counted.
    witness = ffmpeg.output(video.stream(0), "-", format="null")
    branches = [video.stream(1 + index) for index in range(BRANCHES)]
    return _compile(ffmpeg.merge_outputs(witness, *still_outputs(branches, still)), binary)


def keyframes_suffice(still: Stills, gop_s: float, video_s: float) -> bool:
    """Whether every tile still gets a frame of its own cue from the keyframes alone.

    Keyframes are at every multiple of ``gop_s`` (closed GOPs of a fixed length, from 0). With
    cues at least that long, the first keyframe at or after a cue's start is inside the cue, so
    no tile takes its neighbour's frame; the last cue, which ends at the duration, needs a
    keyframe before the video ends (``video_s``, less a margin of a frame or more).
    """
    last_start_s = (still.count - 1) * still.interval_s
    last_keyframe_s = math.ceil(last_start_s / gop_s - 1e-9) * gop_s  # the last tile's
    return gop_s <= still.interval_s and last_keyframe_s < video_s


def smallest(plan: Plan) -> Target:
    """The rendition cheapest to decode: the fewest pixels."""
    return min(plan.targets, key=lambda target: target.width * target.height)


class _Part(Progress):
    """One of derive's ffmpegs: its own counters; each sample is relayed to the job's."""

    def __init__(self, relay: _Relay) -> None:
        super().__init__(clock=relay.job.clock)
        self._relay = relay

    def update(self, sample: ProgressSample) -> None:
        super().update(sample)
        self._relay.moved()


class _Relay:
    """Several ffmpegs as one stage of the job's progress: it is where the slowest one is.

    The job advances (its stall clock restarts) only when the slowest part advances, so a part
    that stops is seen as a stall once the others have caught up with it or finished. The job's
    counters are set, not maxed: whatever an earlier stage left in them does not hide derive.
    """

    def __init__(self, job: Progress, count: int) -> None:
        self.job = job
        self.parts = [_Part(self) for _ in range(count)]
        self._frame, self._out_time_s = 0, 0.0

    def moved(self) -> None:
        slowest = min(self.parts, key=lambda part: (part.out_time_s, part.frame))
        if slowest.frame <= self._frame and slowest.out_time_s <= self._out_time_s:
            return
        self._frame, self._out_time_s = slowest.frame, slowest.out_time_s
        job = self.job
        job.frame, job.out_time_s = slowest.frame, slowest.out_time_s
        job.speed = slowest.speed or job.speed
        job.last_advance = job.clock()


async def _run(args: list[str], progress: Progress) -> None:
    try:
        await encoder.run(args, progress)
    except InputRejected as exc:  # our own file: never a verdict on the upload
        raise FfmpegFailed(f"derive: {exc}") from exc


async def _together(*work: Awaitable[None]) -> None:
    """Await all; on the first failure cancel the others (killing their ffmpeg), then raise it."""
    tasks = [asyncio.ensure_future(w) for w in work]
    try:
        await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


async def derive(
    plan: Plan,
    media: MediaInfo,
    outputs: Mapping[str, Path],
    scratch: Path,
    *,
    hls: bool,
    stills: bool,
    progress: Progress,
    binary: str = "ffmpeg",
) -> tuple[HlsOutput | None, Stills | None]:
    """Write the HLS streams and/or the stills of ``outputs`` (checked renditions) into ``scratch``.

    Planned exactly as the single pass plans them (``pipeline._encode``), so the same gates
    apply. Returns ``(hls_output, stills)`` for ``publish.Encoded``; None for what was not asked.
    """
    hls_output, still = None, None
    commands = []
    if hls:
        hls_output = HlsOutput(scratch / "hls", hls_time_s(plan, media.fps))
        hls_output.prepare(plan)
        commands.append(hls_args(plan, outputs, hls_output, binary=binary))
    if stills:
        tolerance_s = verify.tolerance_s(media)
        still = plan_stills(media.duration_s, plan, tolerance_s, scratch)
        source = outputs[smallest(plan).name]
        video_s = (media.video_duration_s or media.duration_s) - tolerance_s
        keyframes = keyframes_suffice(still, planned_gop_s(plan, media.fps), video_s)
        commands.append(stills_args(plan, still, source, keyframes_only=keyframes, binary=binary))
    relay = _Relay(progress, len(commands))
    await _together(*(_run(args, part) for args, part in zip(commands, relay.parts, strict=True)))
    if still is not None:
        still.files.vtt.write_text(vtt_text(still))
    return hls_output, still
