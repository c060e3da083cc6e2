"""Publishing what one encode left in scratch: the gate first, then the uploads, then the record.

Order is the whole point. Nothing is uploaded before every output passed its gate (the MP4
renditions with ffprobe, the HLS stream's playlists and fMP4 boxes, the poster, sprite and
WebVTT index) *and* the fence passed: the lease is still this worker's and the upload still
exists. Outputs overwrite the video's keys, so a worker that lost its job (or an older upload's
job) must never replace newer ones. Then the renditions, the stills and the HLS stream go up
side by side (the stream's master playlist last, ``stream.publish``), and the record of what was
published is returned for the ``COMPLETED`` write.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from transcoder import metrics
from transcoder.domain.job import (
    HlsRecord,
    JobMessage,
    PosterRecord,
    Published,
    RenditionRecord,
    RenditionStatus,
    SourceFacts,
    ThumbnailsRecord,
    hls_prefix,
    poster_key,
    thumbnails_prefix,
)
from transcoder.domain.job import output_key as rendition_key
from transcoder.media import hls, ladder, probe, stills, verify
from transcoder.media.hls import HlsOutput
from transcoder.media.progress import Progress
from transcoder.runtime import stream
from transcoder.runtime.tasks import all_or_none

if TYPE_CHECKING:
    from transcoder.aws.storage import Uploaded
    from transcoder.runtime.ports import StoragePort

Fence = Callable[[], Awaitable[None]]


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


@dataclass(frozen=True, slots=True)
class Checked:
    """Every output that passed the gate: the renditions' facts and the HLS variants."""

    renditions: dict[str, verify.Verified]
    variants: list[hls.Variant]


class Publisher:
    """Gates and uploads one job's outputs (see the module docstring)."""

    def __init__(self, storage: StoragePort, *, ffprobe_timeout_s: float) -> None:
        self._storage = storage
        self._ffprobe_timeout_s = ffprobe_timeout_s

    async def publish(
        self, message: JobMessage, encoded: Encoded, progress: Progress, fences: list[Fence]
    ) -> Published:
        """Check every output while ``fences`` run, then upload them all."""
        progress.enter("verify")
        with metrics.STAGE_DURATION.labels("verify").time():
            async with contextlib.AsyncExitStack() as stack:
                for fence in fences:
                    await stack.enter_async_context(alongside(fence()))
                checked = await self._check(encoded)
        progress.enter("upload")
        with metrics.STAGE_DURATION.labels("upload").time():
            renditions = asyncio.ensure_future(
                self._upload_renditions(message, encoded, checked.renditions)
            )
            still = asyncio.ensure_future(self._upload_stills(message, encoded.stills))
            hls_record = asyncio.ensure_future(
                self._publish_hls(message, encoded, checked.variants)
            )
            await all_or_none(renditions, still, hls_record)
        poster, thumbnails = still.result()
        return Published(
            renditions=renditions.result(),
            poster=poster,
            thumbnails=thumbnails,
            hls=hls_record.result(),
        )

    async def _check(self, encoded: Encoded) -> Checked:
        """The publish gate for every output; a source cut short is reported first."""
        renditions = await self._verify(encoded)
        variants: list[hls.Variant] = []
        if encoded.hls_output is not None:  # file reads: off the loop
            variants = await asyncio.to_thread(
                hls.check, encoded.hls_output.folder, encoded.media, encoded.plan
            )
        if encoded.stills is not None:
            tolerance_s = verify.tolerance_s(encoded.media)
            await asyncio.to_thread(stills.check, encoded.stills, tolerance_s)
        return Checked(renditions, variants)

    async def _verify(self, encoded: Encoded) -> dict[str, verify.Verified]:
        """Probe every rendition; a source cut short fails first, then the publish gate."""
        plan, outputs, media = encoded.plan, encoded.outputs, encoded.media
        probes = await asyncio.gather(
            *(
                probe.run(str(outputs[t.name]), timeout_s=self._ffprobe_timeout_s)
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

    async def _upload_renditions(
        self, message: JobMessage, encoded: Encoded, checked: dict[str, verify.Verified]
    ) -> dict[str, RenditionRecord]:
        plan = encoded.plan
        uploads = await all_or_none(
            *(
                self._storage.upload(
                    encoded.outputs[t.name],
                    rendition_key(t.name, message.user_id, message.video_id),
                )
                for t in plan.targets
            )
        )
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
                encode_s=round(encoded.encode_s, 3),
            )
        for skipped in plan.skipped:
            records[skipped.name] = RenditionRecord(
                status=RenditionStatus.SKIPPED, reason=skipped.reason
            )
        return records

    async def _upload_stills(
        self, message: JobMessage, still: stills.Stills | None
    ) -> tuple[PosterRecord | None, ThumbnailsRecord | None]:
        """Upload the checked poster, sprite and VTT with their content types."""
        if still is None:
            return None, None
        prefix = thumbnails_prefix(message.user_id, message.video_id)
        poster, sprite, vtt = await all_or_none(
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
        return _poster_record(poster, still), _thumbnails_record(sprite, vtt, still)

    async def _publish_hls(
        self, message: JobMessage, encoded: Encoded, variants: list[hls.Variant]
    ) -> HlsRecord | None:
        if encoded.hls_output is None or not variants:
            return None
        return await stream.publish(
            self._storage,
            variants,
            encoded.hls_output.folder,
            hls_prefix(message.user_id, message.video_id),
            segment_s=hls.gop_s(encoded.plan, encoded.media.fps),
        )


def _poster_record(poster: Uploaded, still: stills.Stills) -> PosterRecord:
    return PosterRecord(
        key=poster.key,
        width=still.poster_width,
        height=still.poster_height,
        bytes=poster.size_bytes,
        content_type=stills.JPEG_TYPE,
    )


def _thumbnails_record(sprite: Uploaded, vtt: Uploaded, still: stills.Stills) -> ThumbnailsRecord:
    return ThumbnailsRecord(
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
