"""The pipeline: probe -> plan -> transcode -> verify -> upload. It knows nothing of SQS.

A source longer than ``chunk_threshold_s`` is not transcoded by ``run``: it returns a ``Split``
(the job's parts, ``transcoder.runtime.chunked``) for the worker to fan out. ``run_part`` encodes
one part into the job's work prefix; ``stitch`` assembles the parts and publishes them exactly as
a single pass publishes its encode.

No source byte touches local disk: ffprobe and ffmpeg read the object over HTTP with range
requests (moov-at-end MP4s work), from the worker's loopback gateway (``gateway.py``, the default)
or from a presigned GET. Every output (the MP4 renditions, their HLS streams, the poster, the
thumbnail sprite and its WebVTT index, all from one ffmpeg run) is written to a per-job scratch
directory that is removed in every outcome, cancellation included; ``publish.py`` gates and
uploads them.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol, TypeVar

from transcoder import metrics
from transcoder.aws.gateway import GatewayConfig, SourceGateway
from transcoder.aws.storage import ObjectInfo
from transcoder.domain.errors import InputRejected, TranscoderError
from transcoder.domain.job import (
    JobMessage,
    PartsRecord,
    Published,
    Reason,
    SourceFacts,
    work_prefix,
)
from transcoder.domain.rungs import Rung
from transcoder.logs import get_logger
from transcoder.media import derive, encoder, hls, ladder, probe, stills, verify
from transcoder.media.chunks import DEFAULT_POSTROLL_FRAMES, DEFAULT_WARMUP_FRAMES
from transcoder.media.ffmpeg import EncodeOptions, build_args
from transcoder.media.hls import HlsOutput
from transcoder.media.progress import Progress
from transcoder.runtime import chunked
from transcoder.runtime.publish import Encoded, Fence, Publisher

if TYPE_CHECKING:
    from transcoder.runtime.ports import StoragePort

log = get_logger(__name__)
DEFAULT_GATEWAY = GatewayConfig()


@dataclass(frozen=True, slots=True)
class PipelineConfig:
    ladder: tuple[Rung, ...]
    encode: EncodeOptions
    scratch_dir: Path
    max_input_bytes: int
    max_input_duration_s: float
    max_fps: float
    gop_s: float
    presign_ttl_s: int
    ffprobe_timeout_s: float
    source_access: Literal["gateway", "presigned"] = "gateway"
    gateway: GatewayConfig = DEFAULT_GATEWAY
    source_read_timeout_s: float = DEFAULT_GATEWAY.read_timeout_s
    hls: bool = True  # also write and publish each rendition's HLS stream from the same encode
    stills: bool = True  # poster + thumbnail sprite from the same ffmpeg (TRANSCODER_STILLS)
    chunking: bool = True  # split long sources into parts (TRANSCODER_CHUNKING)
    chunk_s: float = 30.0  # about this much source per chunk (TRANSCODER_CHUNK_S)
    chunk_threshold_s: float = 120.0  # sources longer than this are chunked
    chunk_postroll_frames: int = DEFAULT_POSTROLL_FRAMES  # encoded past a chunk, then dropped
    chunk_warmup_frames: int = DEFAULT_WARMUP_FRAMES  # encoded before a chunk, then dropped


@dataclass(frozen=True, slots=True)
class PipelineResult:
    source: SourceFacts
    published: Published


@dataclass(frozen=True, slots=True)
class Split:
    """A long source, planned as parts for the worker to fan out (nothing was encoded)."""

    source: SourceFacts
    plan: PartsRecord


@dataclass(frozen=True, slots=True)
class Planned:
    media: probe.MediaInfo
    plan: ladder.Plan
    facts: SourceFacts


_T = TypeVar("_T")


SourceCallback = Callable[[SourceFacts], Awaitable[None]]
PublishGuard = Fence  # what the worker passes: its lease check before anything is uploaded


def source_facts(media: probe.MediaInfo) -> SourceFacts:
    return SourceFacts(
        size_bytes=media.size_bytes,
        duration_s=round(media.duration_s, 3),
        width=media.width,
        height=media.height,
        display_width=media.display_width,
        display_height=media.display_height,
        fps=round(media.fps, 3),
        video_codec=media.video_codec,
        audio_codec=media.audio_codec,
        rotation=media.rotation,
        pix_fmt=media.pix_fmt,
        container=media.container,
    )


class SourceReads(Protocol):
    """What the pipeline needs of the gateway: whether a read failed, and how."""

    failure: TranscoderError | None
    failed: asyncio.Event


async def from_source(work: Awaitable[_T], reads: SourceReads | None) -> _T:
    """The probe-and-transcode stage's result, unless a source read failed during it.

    A media verdict (``truncated``, ``undecodable``, ...) is only true of bytes ffprobe and ffmpeg
    were served: when the gateway could not serve one (S3 down past its retries, the object
    replaced), what they concluded is about that, so the gateway's failure is reported instead,
    retryable unless the object itself changed. A zero exit is no better: the output may end
    where S3 did. The stage is stopped as soon as a read fails for good; ffmpeg's reconnects
    would only wait on S3.
    """
    if reads is None:
        return await work
    task = asyncio.ensure_future(work)
    failed = asyncio.ensure_future(reads.failed.wait())
    try:
        await asyncio.wait({task, failed}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for pending in (task, failed):
            pending.cancel()
        await asyncio.gather(task, failed, return_exceptions=True)
    if reads.failure is not None:
        cause = None if task.cancelled() else task.exception()
        raise reads.failure from cause
    return task.result()


def _names(planned: Planned) -> tuple[str, ...]:
    return tuple(target.name for target in planned.plan.targets)


class Pipeline:
    """Transcodes one job's source into its renditions and uploads them."""

    def __init__(self, storage: StoragePort, config: PipelineConfig) -> None:
        self._storage = storage
        self._config = config
        self._publisher = Publisher(storage, ffprobe_timeout_s=config.ffprobe_timeout_s)

    async def run(
        self,
        message: JobMessage,
        progress: Progress,
        on_source: SourceCallback,
        before_publish: PublishGuard | None = None,
    ) -> PipelineResult | Split:
        started = time.monotonic()
        self._check_renditions(message)
        info = await self._locate(message)
        async with self._scratch(message) as scratch:
            # The source (and the gateway's cache) is held only while ffprobe and ffmpeg read it.
            async with self._source(message, info) as (url, gateway):
                stage = self._encode(message, url, info, scratch, progress, on_source)
                encoded = await from_source(stage, gateway)
            if isinstance(encoded, Split):
                return encoded
            # The fence: the lease is still ours and the upload still exists (see publish.py).
            fences = self._fences(message, before_publish)
            published = await self._publisher.publish(message, encoded, progress, fences)
        metrics.SOURCE_BYTES.inc(info.size_bytes)
        log.info("job.transcoded", elapsed_s=round(time.monotonic() - started, 3))
        return PipelineResult(source=encoded.facts, published=published)

    async def run_part(
        self, message: JobMessage, progress: Progress, before_publish: PublishGuard | None = None
    ) -> list[str]:
        """Encode one part of a chunked job into its work keys (after the fences); the keys."""
        part = message.part
        assert part is not None
        self._check_renditions(message)
        info = await self._locate(message)
        async with self._scratch(message) as scratch:
            async with self._source(message, info) as (url, gateway):
                planned = await from_source(self._probe_plan(message, url, info, progress), gateway)
                outputs = chunked.part_outputs(part, message.job_id, _names(planned), scratch)
                progress.enter("transcode")
                with metrics.STAGE_DURATION.labels("transcode").time():
                    encode = chunked.encode_part(
                        part,
                        url,
                        planned.plan,
                        outputs,
                        self._config.encode,
                        progress,
                        ffprobe_timeout_s=self._config.ffprobe_timeout_s,
                    )
                    await from_source(encode, gateway)
            for fence in self._fences(message, before_publish):
                await fence()
            progress.enter("upload")
            with metrics.STAGE_DURATION.labels("upload").time():
                await asyncio.gather(
                    *(self._storage.upload(path, key) for key, path in outputs.items())
                )
        log.info("job.part_encoded", part=part.label, keys=len(outputs))
        return list(outputs)

    async def stitch(
        self,
        message: JobMessage,
        parts: PartsRecord,
        progress: Progress,
        before_publish: PublishGuard | None = None,
    ) -> PipelineResult:
        """Assemble a chunked job's renditions from its parts, gate and publish them, clean up."""
        started = time.monotonic()
        whole = message.whole()
        info = await self._locate(whole)
        async with self._scratch(message) as scratch:
            async with self._source(whole, info) as (url, gateway):
                planned = await from_source(self._probe_plan(whole, url, info, progress), gateway)
            outputs = await chunked.assemble(
                self._storage, message.job_id, parts, planned.plan, scratch, progress
            )
            # The HLS stream (copied, not encoded) and the stills, from the stitched renditions.
            progress.enter("transcode")  # the stage the stall detector watches
            hls_output, still = await derive.derive(
                planned.plan,
                planned.media,
                outputs,
                scratch,
                hls=self._config.hls,
                stills=self._config.stills,
                progress=progress,
            )
            encoded = Encoded(
                planned.media,
                planned.plan,
                planned.facts,
                outputs,
                time.monotonic() - started,
                hls_output=hls_output,
                stills=still,
            )
            fences = self._fences(whole, before_publish)
            published = await self._publisher.publish(whole, encoded, progress, fences)
        await self._remove_work(message.job_id)
        log.info("job.transcoded", elapsed_s=round(time.monotonic() - started, 3), stitched=True)
        return PipelineResult(source=planned.facts, published=published)

    async def _remove_work(self, job_id: str) -> None:
        """The parts are not needed once published (a lifecycle rule removes any left behind)."""
        try:
            keys = await self._storage.list_keys(work_prefix(job_id))
            if keys:
                await self._storage.delete(keys)
        except TranscoderError as exc:
            log.warning("job.work_cleanup_failed", error=str(exc))

    def _fences(self, message: JobMessage, before_publish: PublishGuard | None) -> list[Fence]:
        """The lease is still ours (the worker's check), and the upload still exists."""
        fences: list[Fence] = [partial(self._still_uploaded, message)]
        if before_publish is not None:
            fences.insert(0, before_publish)
        return fences

    @contextlib.asynccontextmanager
    async def _scratch(self, message: JobMessage) -> AsyncIterator[Path]:
        """A per-job scratch directory, removed in every outcome, cancellation included."""
        self._config.scratch_dir.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix=f"{message.job_id}-", dir=self._config.scratch_dir))
        try:
            yield scratch
        finally:
            await asyncio.shield(asyncio.to_thread(shutil.rmtree, scratch, True))

    async def _probe_plan(
        self, message: JobMessage, url: str, info: ObjectInfo, progress: Progress
    ) -> Planned:
        progress.enter("probe")
        with metrics.STAGE_DURATION.labels("probe").time():
            raw = await probe.run(url, timeout_s=self._config.ffprobe_timeout_s)
            media = probe.parse(raw, size_bytes=info.size_bytes)
        if media.duration_s > self._config.max_input_duration_s:
            raise InputRejected(
                f"source lasts {media.duration_s:.1f} s, over the "
                f"{self._config.max_input_duration_s:g} s limit",
                reason=Reason.INPUT_TOO_LONG,
            )
        plan = ladder.plan(
            media,
            self._config.ladder,
            message.renditions,
            max_fps=self._config.max_fps,
            gop_s=self._config.gop_s,
        )
        return Planned(media, plan, source_facts(media))

    def _chunked(self, media: probe.MediaInfo) -> bool:
        config = self._config
        return config.chunking and media.duration_s > config.chunk_threshold_s

    async def _encode(
        self,
        message: JobMessage,
        url: str,
        info: ObjectInfo,
        scratch: Path,
        progress: Progress,
        on_source: SourceCallback,
    ) -> Encoded | Split:
        """Probe, plan and run the one ffmpeg that writes every rendition into ``scratch``."""
        planned = await self._probe_plan(message, url, info, progress)
        media, plan, facts = planned.media, planned.plan, planned.facts
        await on_source(facts)
        log.info("job.planned", targets=[f"{t.name}:{t.width}x{t.height}" for t in plan.targets])
        if self._chunked(media):
            parts = chunked.parts_plan(
                media,
                plan,
                self._config.chunk_s,
                postroll_frames=self._config.chunk_postroll_frames,
                warmup_frames=self._config.chunk_warmup_frames,
            )
            log.info("job.split", parts=len(parts.states), chunks=parts.chunk_count)
            return Split(facts, parts)
        progress.duration_s = media.duration_s
        outputs = {target.name: scratch / f"{target.name}.mp4" for target in plan.targets}
        hls_output = None
        if self._config.hls:
            hls_output = HlsOutput(scratch / "hls", hls.hls_time_s(plan, media.fps))
            hls_output.prepare(plan)
        still = None
        if self._config.stills:
            still = stills.plan(media.duration_s, plan, verify.tolerance_s(media), scratch)
        args = build_args(
            url, plan, outputs, self._config.encode, hls_output=hls_output, stills=still
        )
        progress.enter("transcode")
        encode_started = time.monotonic()
        with metrics.STAGE_DURATION.labels("transcode").time():
            await encoder.run(args, progress)
        encode_s = time.monotonic() - encode_started
        metrics.FFMPEG_SPEED.observe(media.duration_s / max(encode_s, 1e-3))
        if still is not None:
            still.files.vtt.write_text(stills.vtt_text(still))
        return Encoded(media, plan, facts, outputs, encode_s, hls_output=hls_output, stills=still)

    @contextlib.asynccontextmanager
    async def _source(
        self, message: JobMessage, info: ObjectInfo
    ) -> AsyncIterator[tuple[str, SourceGateway | None]]:
        """The URL ffprobe and ffmpeg read the source from, pinned to the version checked."""
        if self._config.source_access == "presigned":
            url = await self._storage.presign_get(
                message.key, ttl_s=self._config.presign_ttl_s, version_id=message.source_version
            )
            yield url, None
            return
        gateway = SourceGateway(
            self._storage,
            message.key,
            size_bytes=info.size_bytes,
            etag=None if message.source_version else info.etag,
            version_id=message.source_version,
            config=dataclasses.replace(
                self._config.gateway, read_timeout_s=self._config.source_read_timeout_s
            ),
        )
        async with gateway as url:
            yield url, gateway

    def _check_renditions(self, message: JobMessage) -> None:
        known = {rung.name for rung in self._config.ladder}
        unknown = [name for name in message.renditions if name not in known]
        if unknown:
            raise InputRejected(
                f"rendition(s) {', '.join(unknown)} are not in this worker's ladder "
                f"({', '.join(sorted(known))}); fix TRANSCODER_RENDITIONS / TRANSCODER_LADDER",
                reason=Reason.UNKNOWN_RENDITION,
            )

    async def _still_uploaded(self, message: JobMessage) -> None:
        """The upload was not deleted: its key still has a current object.

        On a versioned bucket a deleted object's version stays readable, so reading the pinned
        version is not enough: the key without a version answers 404 once a delete marker is on
        top. Checked before reading and again before publishing.
        """
        try:
            await self._storage.head(message.key)
        except InputRejected as exc:
            if exc.reason is not Reason.SOURCE_NOT_FOUND:
                raise
            raise InputRejected(
                f"s3://{message.bucket}/{message.key} was deleted by its owner; "
                "nothing is published (upload it again to transcode it)",
                reason=Reason.SOURCE_DELETED,
            ) from exc

    async def _locate(self, message: JobMessage) -> ObjectInfo:
        """Check the object still is what the message says it is."""
        if message.source_version:
            await self._still_uploaded(message)
        try:
            info = await self._storage.head(message.key, version_id=message.source_version)
        except InputRejected as exc:
            if exc.reason is not Reason.SOURCE_NOT_FOUND:
                raise
            raise InputRejected(
                f"s3://{message.bucket}/{message.key} was deleted before it was read; "
                "nothing is published (upload it again to transcode it)",
                reason=Reason.SOURCE_DELETED,
            ) from exc
        if info.size_bytes == 0:
            raise InputRejected("the upload is empty (0 bytes)", reason=Reason.INPUT_EMPTY)
        if info.size_bytes > self._config.max_input_bytes:
            raise InputRejected(
                f"the upload is {info.size_bytes} bytes, over the "
                f"{self._config.max_input_bytes}-byte limit",
                reason=Reason.INPUT_TOO_LARGE,
            )
        if not message.source_version and message.source_etag and info.etag != message.source_etag:
            raise InputRejected(
                "the object was replaced after this job was queued; the new upload is its own job",
                reason=Reason.SOURCE_CHANGED,
            )
        return info
