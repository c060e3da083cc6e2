"""Chunked encoding (issue 15 groundwork): plan, encode and stitch a long source in pieces.

Pure argument building and checks, tested by equality, plus thin async shells; no AWS.

* **Plan** (:func:`plan_chunks`): the *output* frame timeline is constant-rate (the plan's ``fps``
  filter, or the source's own constant rate), so frame ``k`` is at ``k / rate``. It is cut at
  multiples of a whole number of GOPs (``keyint`` frames): every chunk starts with an IDR frame and
  the closed GOP grid of the stitched rendition is the single pass's. The last chunk is open-ended
  (to the end of the source), because only decoding tells the exact frame count; a tail shorter
  than one GOP joins the chunk before it.
* **Encode one chunk** (:func:`chunk_args`): seek the input to ``preroll_s`` before the boundary
  without dropping frames at the seek point (``-noaccurate_seek``: decoding starts at the keyframe
  before it and every frame reaches the filters), keep the source's timestamps from its start
  (``-copyts -start_at_zero``: the same clock a single pass has), run the single pass's filter
  chain (deinterlace, ``fps``, colour), and only then keep the chunk's frames by output frame index
  (``trim`` on the ``fps`` filter's 1/rate clock) and restart them at 0. Temporal filters (``fps``
  picks the frame for a slot from the frames around it, ``bwdif`` reads its neighbours) therefore
  see the same frames as in a single pass. Video only, split into every rendition, the single
  pass's x264 options; one plain MP4 per rendition.
* **Post-roll** (``postroll_frames``, default 6): a closed chunk is encoded a few frames past
  its end, so x264 decides its last frames with the future in its lookahead as a single pass
  does; the stitch drops them from the IDR at the boundary on (concat ``outpoint`` at that IDR's
  decode time: a closed GOP means nothing before the boundary decodes after it).
* **Warm-up** (``warmup_frames``, default 12): every chunk but the first is encoded from a few
  frames before its start, with an IDR forced at its first kept frame (``-force_key_frames``;
  x264 counts ``keyint`` from there, so the rest of the grid follows). A cold x264 gives its first
  IDR the CRF's own QP less the I/P offset; a warm one derives it from the recent P-frames' QPs,
  as the single pass does at that same IDR, which is the seam's start side. The stitch starts the
  chunk at that IDR (concat ``inpoint`` at its presentation time: the demuxer seeks to it and
  subtracts it from every timestamp; nothing after a closed GOP's IDR refers to the warm-up).
* **Audio** (:func:`audio_args`): encoded once for the whole source, as in a single pass.
* **Stitch** (:func:`stitch_args`): per rendition the concat demuxer reads the chunk MP4s and
  offsets each by the exact duration of the chunks before it (``duration`` lines in whole
  microseconds from the cumulative frame count, so rounding never accumulates); ``-c copy`` (no
  re-encode), the audio muxed in, ``+faststart``. MP4 chunks because each sample keeps an exact
  timestamp in the track's timescale (MPEG-TS rounds to 90 kHz, which 29.97 fps does not divide;
  a raw H.264 stream loses timestamps); the chunks' SPS/PPS are identical (same size and options),
  so one ``avcC`` serves the stitched file. ``auto_convert=0`` keeps the concat demuxer from
  rewriting the packets to Annex B.
* **Check** (:func:`timeline_problems`, :func:`check_chunks`): every closed chunk has exactly its
  planned frames with identical codec parameters; the stitched packets' timestamps are exactly
  frames ``0..n-1`` (no gap, no overlap, decode order strictly increasing) with keyframes exactly on
  the GOP grid. The publish gate (``verify.check``) runs on top, as for a single pass.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path
from typing import Any

import ffmpeg

from transcoder.media.ffmpeg import (
    HTTP_INPUT_OPTIONS,
    EncodeOptions,
    _encode_options,
    _scaled,
    _split,
    _video_chain,
)
from transcoder.media.ladder import Plan
from transcoder.media.probe import MAX_DECODE_ERROR_RATE, MediaInfo

# Decoding starts this far before a boundary (from the keyframe before that point): enough for
# ``fps`` and ``bwdif`` to see the frames around the boundary, and for an MP4 seek, which finds a
# keyframe by decode time, to land before it even with B-frame reordering.
DEFAULT_PREROLL_S = 1.0
# Measured (docs/media.md, "Chunked encoding"): 6 frames of post-roll make a chunk's last frames
# the single pass's (3 are not enough); 12 frames of warm-up bring the chunk's IDR from 2 dB below
# the single pass's to 0.1-0.15 dB (25 frames: 0.05 dB, at twice the cost). Together 18 frames a
# chunk: 2.4 % more encode at 30 s chunks of 25 fps.
DEFAULT_POSTROLL_FRAMES = 6
DEFAULT_WARMUP_FRAMES = 12
_MAX_RATE_DENOMINATOR = 1_001_000  # what ffmpeg's av_parse_video_rate allows


@dataclass(frozen=True, slots=True)
class Chunk:
    """Output frames ``[start_frame, end_frame)``; ``end_frame`` None: to the end of the source."""

    index: int
    start_frame: int
    end_frame: int | None

    @property
    def frames(self) -> int | None:
        return None if self.end_frame is None else self.end_frame - self.start_frame


@dataclass(frozen=True, slots=True)
class ChunkPlan:
    """The chunks of one source at one output rate, decided once for every rendition."""

    rate: Fraction  # output frames per second, exactly as ffmpeg's fps filter takes it
    keyint: int
    expected_frames: int  # the video's duration at ``rate``: where the boundaries may go
    chunks: tuple[Chunk, ...]
    # Frames encoded past a closed chunk's end and dropped at the stitch: x264 then decides the
    # chunk's last frames with the future in its lookahead, as in a single pass (no seam there).
    postroll_frames: int = DEFAULT_POSTROLL_FRAMES
    # Frames encoded before a chunk's start and dropped at the stitch: x264's rate control then
    # reaches the chunk's IDR with a history of P-frame quantisers, as in a single pass (a cold
    # encoder gives its first IDR the CRF's own QP less the I/P offset, whatever the content).
    warmup_frames: int = DEFAULT_WARMUP_FRAMES

    def warmup(self, chunk: Chunk) -> int:
        """The warm-up frames of ``chunk``: none for the first (nothing precedes frame 0)."""
        return min(self.warmup_frames, chunk.start_frame)

    def encoded_start(self, chunk: Chunk) -> int:
        """The first frame the chunk's encode produces, warm-up included."""
        return chunk.start_frame - self.warmup(chunk)

    def encoded_end(self, chunk: Chunk) -> int | None:
        """The last frame (exclusive) the chunk's encode produces, post-roll included."""
        return None if chunk.end_frame is None else chunk.end_frame + self.postroll_frames

    def time_s(self, frame: int) -> Fraction:
        return frame / self.rate

    def offset_us(self, frame: int) -> int:
        """Where ``frame`` starts, in whole microseconds (the concat demuxer's clock)."""
        return round(frame * 1_000_000 / self.rate)


def output_rate(plan: Plan, media: MediaInfo) -> Fraction:
    """The constant output rate: the plan's ``fps`` filter, else the source's own base rate."""
    if plan.output_fps:
        return Fraction(f"{plan.output_fps:.6g}")  # the text the single pass hands to fps
    return Fraction(media.base_fps or media.fps).limit_denominator(_MAX_RATE_DENOMINATOR)


def plan_chunks(
    media: MediaInfo,
    plan: Plan,
    chunk_s: float,
    *,
    postroll_frames: int = DEFAULT_POSTROLL_FRAMES,
    warmup_frames: int = DEFAULT_WARMUP_FRAMES,
) -> ChunkPlan:
    """Cut the output timeline into chunks of about ``chunk_s`` (a whole number of GOPs)."""
    rate = output_rate(plan, media)
    expected = max(1, round((media.video_duration_s or media.duration_s) * rate))
    length = max(1, math.floor(chunk_s * rate / plan.keyint + Fraction(1, 2))) * plan.keyint
    # The last boundary leaves at least one GOP after it: no sliver of a chunk, and room for the
    # container's duration to be a little off from what the decoder will find.
    starts = list(range(0, max(1, expected - plan.keyint + 1), length))
    ends: list[int | None] = [*starts[1:], None]
    chunks = tuple(Chunk(i, s, e) for i, (s, e) in enumerate(zip(starts, ends, strict=True)))
    return ChunkPlan(rate, plan.keyint, expected, chunks, postroll_frames, warmup_frames)


def _rate_text(rate: Fraction) -> str:
    return f"{rate.numerator}/{rate.denominator}"


def _global(output: Any, *extra: str) -> Any:
    return output.global_args(
        "-nostdin",
        "-hide_banner",
        *("-loglevel", "error", "-progress", "pipe:1", "-nostats"),
        *("-max_error_rate", f"{MAX_DECODE_ERROR_RATE:g}"),
        *extra,
    )


def _input(input_url: str, **options: Any) -> Any:
    http = input_url.startswith(("http://", "https://"))
    return ffmpeg.input(input_url, **(HTTP_INPUT_OPTIONS if http else {}), **options)


def _chunk_tee_spec(plan: Plan, outputs: Mapping[str, Path]) -> str:
    return "|".join(
        f"[f=mp4:select=\\'v:{index}\\']{outputs[target.name]}"
        for index, target in enumerate(plan.targets)
    )


def chunk_args(
    input_url: str,
    plan: Plan,
    chunks: ChunkPlan,
    chunk: Chunk,
    outputs: Mapping[str, Path],
    options: EncodeOptions,
    *,
    preroll_s: float = DEFAULT_PREROLL_S,
    binary: str = "ffmpeg",
) -> list[str]:
    """ffmpeg for one chunk: every rendition's frames ``chunk`` of the single pass, video only."""
    first = chunks.encoded_start(chunk)
    seek_s = max(0.0, float(chunks.time_s(first)) - preroll_s)
    seek = {"ss": f"{seek_s:.6f}"} if seek_s > 0 else {}
    source = _input(input_url, noaccurate_seek=None, **seek)
    video = _video_chain(source, plan)
    if plan.output_fps is None:
        # The single pass's encoder makes the source's constant rate exact (CFR sync); here the
        # fps filter does it before the trim, so frame indices are timestamps.
        video = video.filter("fps", fps=_rate_text(chunks.rate))
    bounds = {"start_pts": first}
    end = chunks.encoded_end(chunk)
    if end is not None:
        bounds["end_pts"] = end
    video = video.filter("trim", **bounds).filter("setpts", f"PTS-{first}")
    video_only = replace(plan, audio_index=None)
    output = ffmpeg.output(
        *_scaled(_split(video, len(plan.targets)), plan),
        _chunk_tee_spec(plan, outputs),
        format="tee",
        **_encode_options(video_only, options),
        **_warmup_keyframe(chunks, chunk),
    )
    args: list[str] = _global(output, "-copyts", "-start_at_zero").compile(
        cmd=binary, overwrite_output=True
    )
    return args


def _warmup_keyframe(chunks: ChunkPlan, chunk: Chunk) -> dict[str, str]:
    """Force the IDR at the chunk's first kept frame after a warm-up that is not whole GOPs.

    x264 counts ``keyint`` from the last keyframe, so the forced IDR also puts every later one
    back on the single pass's grid (``sc_threshold 0``: no scene-cut keyframes in between).
    """
    warmup = chunks.warmup(chunk)
    if warmup % chunks.keyint == 0:
        return {}  # none, or whole GOPs: x264's own grid from frame 0 already has it
    return {"force_key_frames": f"expr:eq(n,{warmup})"}


def audio_args(
    input_url: str, plan: Plan, output: Path, options: EncodeOptions, *, binary: str = "ffmpeg"
) -> list[str]:
    """ffmpeg for the whole source's audio, once: AAC-LC stereo in an MP4 (as a single pass)."""
    if plan.audio_index is None:
        raise ValueError("the plan has no audio to encode")
    source = _input(input_url)
    stream = ffmpeg.output(
        source[str(plan.audio_index)],
        str(output),
        format="mp4",
        map_metadata=-1,
        map_chapters=-1,
        **{"c:a": "aac", "b:a": f"{options.audio_bitrate_kbps}k", "ac": 2},
    )
    args: list[str] = _global(stream).compile(cmd=binary, overwrite_output=True)
    return args


def _quoted(path: Path) -> str:
    return "'" + str(path).replace("'", "'\\''") + "'"


def concat_list(
    chunks: ChunkPlan, paths: Sequence[Path], cuts_us: Sequence[int | None] | None = None
) -> str:
    """The ffconcat script for one rendition's chunk files, each with its exact duration.

    ``cuts_us``: per chunk, the decode time (in the chunk file) of the post-roll's first packet,
    the IDR at the boundary: the concat demuxer drops every packet from that decode time on.
    A chunk with a warm-up starts at its ``inpoint``, the presentation time of its first kept
    frame (an IDR, a closed GOP): the demuxer seeks to it and subtracts it from every timestamp.
    """
    lines = ["ffconcat version 1.0"]
    cuts = cuts_us if cuts_us is not None else [None] * len(paths)
    for chunk, path, cut in zip(chunks.chunks, paths, cuts, strict=True):
        lines.append(f"file {_quoted(path)}")
        if chunks.warmup(chunk):
            lines.append(f"inpoint {chunks.offset_us(chunks.warmup(chunk))}us")
        if chunk.end_frame is not None:
            duration = chunks.offset_us(chunk.end_frame) - chunks.offset_us(chunk.start_frame)
            lines.append(f"duration {duration}us")
        if cut is not None:
            lines.append(f"outpoint {cut}us")
    return "\n".join(lines) + "\n"


def stitch_args(
    concat_script: Path, audio: Path | None, output: Path, *, binary: str = "ffmpeg"
) -> list[str]:
    """ffmpeg that joins the chunks (no re-encode), muxes the audio and writes a faststart MP4."""
    video = ffmpeg.input(str(concat_script), f="concat", safe=0, auto_convert=0)
    streams = [video["v:0"]]
    if audio is not None:
        streams.append(ffmpeg.input(str(audio))["a:0"])
    output_node = ffmpeg.output(
        *streams,
        str(output),
        format="mp4",
        c="copy",
        map_metadata=-1,
        map_chapters=-1,
        movflags="+faststart",
    )
    args: list[str] = output_node.global_args(
        "-nostdin", "-hide_banner", "-loglevel", "error"
    ).compile(cmd=binary, overwrite_output=True)
    return args
