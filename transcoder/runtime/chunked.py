"""Chunked jobs in the pipeline (issue 15): plan the parts, encode one, assemble the renditions.

The media work is ``transcoder.media.chunks`` and ``transcoder.media.stitch``; this module turns a
part message (``JobMessage.part``) into files and keys, with nothing of SQS or DynamoDB:

* :func:`parts_plan`: a long source's ``PartsRecord`` (the chunks on the output GOP grid, the
  audio part when the source has audio). Never more than ``MAX_PARTS`` chunks: a longer source
  gets longer chunks, so the job record stays small.
* :func:`encode_part`: one chunk (every rendition from one decode, video only) or the whole
  source's audio, written to scratch and checked (a closed chunk holds exactly its planned frames
  on the GOP grid) before anything is uploaded; ``part_outputs`` names the work keys.
* :func:`assemble`: the stitcher downloads every part, stitches each rendition without
  re-encoding (``stitch.stitch``: its timeline is exactly frames ``0..n-1``, keyframes on the GOP
  grid) and returns the MP4s, which the pipeline gates and publishes as a single pass's.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Mapping
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING

from transcoder.domain.errors import FfmpegFailed, InputRejected, OutputInvalid
from transcoder.domain.job import (
    Part,
    PartKind,
    PartsRecord,
    PartState,
    audio_key,
    chunk_key,
)
from transcoder.logs import get_logger
from transcoder.media import encoder, stitch
from transcoder.media.chunks import (
    DEFAULT_POSTROLL_FRAMES,
    DEFAULT_WARMUP_FRAMES,
    Chunk,
    ChunkPlan,
    audio_args,
    chunk_args,
    plan_chunks,
)
from transcoder.media.ffmpeg import EncodeOptions
from transcoder.media.ladder import Plan
from transcoder.media.probe import MediaInfo
from transcoder.media.progress import Progress

if TYPE_CHECKING:
    from transcoder.runtime.ports import StoragePort

log = get_logger(__name__)
MAX_PARTS = 240  # chunks per job at most: the plan lives in the job record (400 KB item limit)
DOWNLOADS = 4  # parts fetched at once by the stitcher


def rate_text(rate: Fraction) -> str:
    return f"{rate.numerator}/{rate.denominator}"


def parts_plan(
    media: MediaInfo,
    plan: Plan,
    chunk_s: float,
    *,
    postroll_frames: int = DEFAULT_POSTROLL_FRAMES,
    warmup_frames: int = DEFAULT_WARMUP_FRAMES,
) -> PartsRecord:
    """The parts of a long source: chunks of about ``chunk_s`` (at most ``MAX_PARTS``), audio.

    The post-roll and warm-up (frames encoded after and before each chunk, dropped at the stitch:
    ``transcoder.media.chunks``) are recorded with the plan, so every part and the stitch use the
    same ones whatever release or settings the workers that run them have.
    """
    duration = media.video_duration_s or media.duration_s
    chunk_s = max(chunk_s, math.ceil(duration / MAX_PARTS))
    chunks = plan_chunks(
        media, plan, chunk_s, postroll_frames=postroll_frames, warmup_frames=warmup_frames
    )
    audio = plan.audio_index is not None
    count = len(chunks.chunks) + (1 if audio else 0)
    return PartsRecord(
        rate=rate_text(chunks.rate),
        keyint=chunks.keyint,
        expected_frames=chunks.expected_frames,
        postroll_frames=chunks.postroll_frames,
        warmup_frames=chunks.warmup_frames,
        starts=tuple(c.start_frame for c in chunks.chunks),
        audio=audio,
        states=tuple(PartState() for _ in range(count)),
    )


def chunk_plan(parts: PartsRecord | Part, chunks: tuple[Chunk, ...]) -> ChunkPlan:
    return ChunkPlan(
        Fraction(parts.rate),
        parts.keyint,
        parts.expected_frames,
        chunks,
        parts.postroll_frames,
        parts.warmup_frames,
    )


def all_chunks(parts: PartsRecord) -> ChunkPlan:
    """The whole job's chunk plan, as recorded."""
    ends: list[int | None] = [*parts.starts[1:], None]
    chunks = tuple(Chunk(i, s, e) for i, (s, e) in enumerate(zip(parts.starts, ends, strict=True)))
    return chunk_plan(parts, chunks)


def part_outputs(part: Part, job_id: str, names: tuple[str, ...], scratch: Path) -> dict[str, Path]:
    """Work key -> the scratch file the part's encode writes it to."""
    if part.kind is PartKind.AUDIO:
        return {audio_key(job_id): scratch / "audio.mp4"}
    return {chunk_key(job_id, name, part.index): scratch / f"{name}.mp4" for name in names}


def check_consistent(part: Part, plan: Plan) -> None:
    """The part was planned with the ladder this worker plans now (same GOP): else it would not
    stitch. A rolling deploy that changes the GOP or the rate: the job must be re-planned."""
    if part.keyint != plan.keyint:
        raise OutputInvalid(
            f"{part.label} was planned with {part.keyint}-frame GOPs, this worker plans "
            f"{plan.keyint}: retry the job so it is planned again"
        )


async def encode_part(
    part: Part,
    url: str,
    plan: Plan,
    outputs: Mapping[str, Path],
    options: EncodeOptions,
    progress: Progress,
    *,
    ffprobe_timeout_s: float = 120,
) -> None:
    """Run one part's ffmpeg into ``outputs`` (work key -> file) and check what it wrote."""
    check_consistent(part, plan)
    files = list(outputs.values())
    if part.kind is PartKind.AUDIO:
        progress.duration_s = part.expected_frames / float(Fraction(part.rate))
        await encoder.run(audio_args(url, plan, files[0], options), progress)
        return
    chunk = Chunk(part.index, part.start_frame, part.end_frame)
    single = chunk_plan(part, (chunk,))
    end = part.end_frame if part.end_frame is not None else part.expected_frames
    progress.duration_s = max(1, end - part.start_frame) / float(single.rate)
    by_name = {target.name: files[i] for i, target in enumerate(plan.targets)}
    await encoder.run(chunk_args(url, plan, single, chunk, by_name, options), progress)
    progress.enter("verify")
    for name, path in by_name.items():
        probed = await stitch.probe_packets(path, timeout_s=ffprobe_timeout_s)
        stitch.check_chunks(f"{name} {part.label}", [probed], single)


async def assemble(
    storage: StoragePort,
    job_id: str,
    parts: PartsRecord,
    plan: Plan,
    scratch: Path,
    progress: Progress,
) -> dict[str, Path]:
    """Download every part and stitch each rendition: name -> the stitched, faststart MP4."""
    chunks = all_chunks(parts)
    names = [target.name for target in plan.targets]
    wanted: dict[str, Path] = {}
    for name in names:
        for chunk in chunks.chunks:
            wanted[chunk_key(job_id, name, chunk.index)] = stitch.chunk_path(
                scratch / "parts", name, chunk.index
            )
    audio = scratch / "parts" / "audio.mp4" if parts.audio else None
    if audio is not None:
        wanted[audio_key(job_id)] = audio
    progress.enter("download")
    gate = asyncio.Semaphore(DOWNLOADS)

    async def fetch(key: str, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        async with gate:
            await storage.download(key, path)

    await asyncio.gather(*(fetch(key, path) for key, path in wanted.items()))
    progress.enter("stitch")
    stitched: dict[str, Path] = {}
    for name in names:
        files = [stitch.chunk_path(scratch / "parts", name, c.index) for c in chunks.chunks]
        output = scratch / f"{name}.mp4"
        try:
            line = await stitch.stitch(chunks, name, files, audio, output)
        except InputRejected as exc:  # our own parts, not the upload: never a permanent verdict
            raise FfmpegFailed(f"stitching {name}: {exc}") from exc
        log.info("job.stitched", rendition=name, frames=line.frames, chunks=len(files))
        stitched[name] = output
    return stitched
