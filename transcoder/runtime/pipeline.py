"""The pipeline: probe -> plan -> transcode -> verify -> upload. It knows nothing of SQS.

No source byte touches local disk: ffprobe and ffmpeg read the object over HTTP with range
requests (moov-at-end MP4s work), from the worker's loopback gateway (``gateway.py``, the default)
or from a presigned GET. Renditions (and, with ``stills``, the poster, the thumbnail sprite and its
WebVTT index) are written to a per-job scratch directory that is removed in every outcome,
cancellation included.
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
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol

from transcoder import metrics
from transcoder.aws.gateway import GatewayConfig, SourceGateway
from transcoder.aws.storage import ObjectInfo
from transcoder.domain.errors import InputRejected, TranscoderError
from transcoder.domain.job import (
    HlsRecord,
    JobMessage,
    PosterRecord,
    Published,
    Reason,
    RenditionRecord,
    RenditionStatus,
    SourceFacts,
    ThumbnailsRecord,
    hls_prefix,
    poster_key,
    thumbnails_prefix,
)
from transcoder.domain.job import output_key as rendition_key
from transcoder.domain.rungs import Rung
from transcoder.logs import get_logger
from transcoder.media import encoder, hls, ladder, probe, stills, verify
from transcoder.media.ffmpeg import EncodeOptions, build_args
from transcoder.media.hls import HlsOutput
from transcoder.media.progress import Progress
from transcoder.runtime import stream

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


@dataclass(frozen=True, slots=True)
class Encoded:
    """What the encode left in scratch, and the facts and plan it was made from."""

    media: probe.MediaInfo
    plan: ladder.Plan
    facts: SourceFacts
    outputs: dict[str, Path]
    encode_s: float
    hls_output: HlsOutput | None = None
    stills: stills.Stills | None = None


@dataclass(frozen=True, slots=True)
class PipelineResult:
    source: SourceFacts
    published: Published


SourceCallback = Callable[[SourceFacts], Awaitable[None]]
PublishGuard = Callable[[], Awaitable[None]]


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


@contextlib.asynccontextmanager
async def alongside(work: Awaitable[None] | None) -> AsyncIterator[None]:
    """Run ``work`` while the block runs; it must succeed too. Cancelled if the block fails."""
    task = asyncio.ensure_future(work) if work is not None else None
    try:
        yield
    except BaseException:
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        raise
    if task is not None:
        await task


class SourceReads(Protocol):
    """What the pipeline needs of the gateway: whether a read failed, and how."""

    failure: TranscoderError | None
    failed: asyncio.Event


async def from_source(work: Awaitable[Encoded], reads: SourceReads | None) -> Encoded:
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


class Pipeline:
    """Transcodes one job's source into its renditions and uploads them."""

    def __init__(self, storage: StoragePort, config: PipelineConfig) -> None:
        self._storage = storage
        self._config = config

    async def run(
        self,
        message: JobMessage,
        progress: Progress,
        on_source: SourceCallback,
        before_publish: PublishGuard | None = None,
    ) -> PipelineResult:
        started = time.monotonic()
        self._check_renditions(message)
        info = await self._locate(message)
        self._config.scratch_dir.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix=f"{message.job_id}-", dir=self._config.scratch_dir))
        try:
            # The source (and the gateway's cache) is held only while ffprobe and ffmpeg read it.
            async with self._source(message, info) as (url, gateway):
                stage = self._encode(message, url, info, scratch, progress, on_source)
                encoded = await from_source(stage, gateway)
            published = await self._publish(message, encoded, progress, before_publish)
        finally:
            await asyncio.shield(asyncio.to_thread(shutil.rmtree, scratch, True))
        metrics.SOURCE_BYTES.inc(info.size_bytes)
        log.info("job.transcoded", elapsed_s=round(time.monotonic() - started, 3))
        return PipelineResult(source=encoded.facts, published=published)

    async def _encode(
        self,
        message: JobMessage,
        url: str,
        info: ObjectInfo,
        scratch: Path,
        progress: Progress,
        on_source: SourceCallback,
    ) -> Encoded:
        """Probe, plan and run the one ffmpeg that writes every rendition into ``scratch``."""
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
        facts = source_facts(media)
        await on_source(facts)
        plan = ladder.plan(
            media,
            self._config.ladder,
            message.renditions,
            max_fps=self._config.max_fps,
            gop_s=self._config.gop_s,
        )
        log.info("job.planned", targets=[f"{t.name}:{t.width}x{t.height}" for t in plan.targets])
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

    async def _verify(
        self, outputs: dict[str, Path], media: probe.MediaInfo, plan: ladder.Plan
    ) -> dict[str, verify.Verified]:
        """Probe every rendition; a source cut short fails first, then the publish gate."""
        probes = await asyncio.gather(
            *(
                probe.run(str(outputs[t.name]), timeout_s=self._config.ffprobe_timeout_s)
                for t in plan.targets
            )
        )  # in parallel: each ffprobe is mostly process start-up
        facts = {target.name: found for target, found in zip(plan.targets, probes, strict=True)}
        for found in facts.values():
            verify.check_complete(found, media)
        return {
            target.name: verify.check(outputs[target.name], facts[target.name], target, media, plan)
            for target in plan.targets
        }

    async def _upload_stills(
        self, message: JobMessage, still: stills.Stills | None
    ) -> tuple[PosterRecord | None, ThumbnailsRecord | None]:
        """Upload the checked poster, sprite and VTT with their content types."""
        if still is None:
            return None, None
        prefix = thumbnails_prefix(message.user_id, message.video_id)
        poster, sprite, vtt = await asyncio.gather(
            self._storage.upload(
                still.files.poster,
                poster_key(message.user_id, message.video_id),
                content_type=stills.JPEG_TYPE,
            ),
            self._storage.upload(
                still.files.sprite, prefix + stills.SPRITE_NAME, content_type=stills.JPEG_TYPE
            ),
            self._storage.upload(
                still.files.vtt, prefix + stills.VTT_NAME, content_type=stills.VTT_TYPE
            ),
        )
        for uploaded in (poster, sprite, vtt):
            metrics.OUTPUT_BYTES.inc(uploaded.size_bytes)
        return PosterRecord(
            key=poster.key,
            width=still.poster_width,
            height=still.poster_height,
            bytes=poster.size_bytes,
            content_type=stills.JPEG_TYPE,
        ), ThumbnailsRecord(
            sprite_key=sprite.key,
            vtt_key=vtt.key,
            interval_s=still.interval_s,
            count=still.count,
            tile_width=still.tile_width,
            tile_height=still.tile_height,
            columns=still.columns,
            rows=still.rows,
            bytes=sprite.size_bytes + vtt.size_bytes,
        )

    # Over 40 lines: check, then upload, then record, in one place so the order (no upload
    # before the gate and the lease both passed) is visible at a glance.
    async def _publish(
        self,
        message: JobMessage,
        encoded: Encoded,
        progress: Progress,
        before_publish: PublishGuard | None,
    ) -> Published:
        """Check every rendition, its HLS stream and the stills, then upload them."""
        plan, outputs, encode_s = encoded.plan, encoded.outputs, encoded.encode_s
        progress.enter("verify")
        # Renditions overwrite the video's output keys: only the lease owner may publish, so a
        # worker that lost its job (or an older upload's job) never replaces newer outputs. The
        # lease is confirmed while the renditions are checked: both must pass before any upload.
        with metrics.STAGE_DURATION.labels("verify").time():
            async with (
                alongside(before_publish() if before_publish is not None else None),
                alongside(self._still_uploaded(message)),
            ):
                checked = await self._verify(outputs, encoded.media, plan)
                streams = await self._verify_hls(encoded)
                if encoded.stills is not None:
                    stills.check(encoded.stills, verify.tolerance_s(encoded.media))
        progress.enter("upload")
        with metrics.STAGE_DURATION.labels("upload").time():
            uploads, (poster, thumbnails) = await asyncio.gather(
                asyncio.gather(
                    *(
                        self._storage.upload(
                            outputs[t.name],
                            rendition_key(t.name, message.user_id, message.video_id),
                        )
                        for t in plan.targets
                    )
                ),
                self._upload_stills(message, encoded.stills),
            )
            hls_record = await self._publish_hls(message, encoded, streams)
        records: dict[str, RenditionRecord] = {}
        for target, uploaded in zip(plan.targets, uploads, strict=True):
            seen = checked[target.name]
            metrics.OUTPUT_BYTES.inc(uploaded.size_bytes)
            records[target.name] = RenditionRecord(
                status=RenditionStatus.COMPLETED,
                key=uploaded.key,
                width=seen.width,
                height=seen.height,
                duration_s=seen.duration_s,
                bytes=uploaded.size_bytes,
                bitrate_kbps=seen.bitrate_kbps,
                encode_s=round(encode_s, 3),
            )
        for skipped in plan.skipped:
            records[skipped.name] = RenditionRecord(
                status=RenditionStatus.SKIPPED, reason=skipped.reason
            )
        return Published(renditions=records, poster=poster, thumbnails=thumbnails, hls=hls_record)

    async def _verify_hls(self, encoded: Encoded) -> list[hls.Variant]:
        """The HLS publish gate (playlists, segments, keyframes): file reads, off the loop."""
        if encoded.hls_output is None:
            return []
        folder = encoded.hls_output.folder
        return await asyncio.to_thread(hls.check, folder, encoded.media, encoded.plan)

    async def _publish_hls(
        self, message: JobMessage, encoded: Encoded, streams: list[hls.Variant]
    ) -> HlsRecord | None:
        if encoded.hls_output is None or not streams:
            return None
        return await stream.publish(
            self._storage,
            streams,
            encoded.hls_output.folder,
            hls_prefix(message.user_id, message.video_id),
            segment_s=hls.gop_s(encoded.plan, encoded.media.fps),
        )
