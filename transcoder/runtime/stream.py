"""Publishing a checked HLS stream (``media.hls``): every file at its layout key, master last.

Order matters to a player that fetches while a re-publish is under way: every rendition's init
and segments go up first (at most ``concurrency`` at a time), then each media playlist (whose
segments are then all there), then the master playlist, written now from what the gate measured.
Only once the new master is up are the objects under the video's HLS prefix that this publish did
not write deleted: a shorter re-upload must not leave stale segments (or a dropped rendition's
folder) behind. A failed clean-up is logged and left for the next publish: the stream the record
points to is complete, and redoing the whole job for a few orphaned objects would cost far more.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from transcoder import metrics
from transcoder.domain.errors import TranscoderError
from transcoder.domain.job import HlsRecord, HlsVariant
from transcoder.logs import get_logger
from transcoder.media import hls
from transcoder.runtime.tasks import all_or_none

if TYPE_CHECKING:
    from transcoder.runtime.ports import StoragePort

log = get_logger(__name__)
UPLOAD_CONCURRENCY = 8


async def publish(
    storage: StoragePort,
    variants: Sequence[hls.Variant],
    hls_dir: Path,
    prefix: str,
    *,
    segment_s: float,
    concurrency: int = UPLOAD_CONCURRENCY,
) -> HlsRecord:
    """Upload ``variants`` under ``prefix`` (``transcoded/hls/{user}/{video}/``), master last."""
    slots = asyncio.Semaphore(concurrency)

    def key_of(path: Path) -> str:
        return prefix + path.relative_to(hls_dir).as_posix()

    async def put(path: Path) -> int:
        key = key_of(path)
        async with slots:
            uploaded = await storage.upload(path, key, content_type=hls.content_type(path))
        metrics.OUTPUT_BYTES.inc(uploaded.size_bytes)
        return uploaded.size_bytes

    media = [path for variant in variants for path in variant.files[:-1]]
    playlists = [variant.files[-1] for variant in variants]
    await all_or_none(*(put(path) for path in media))
    await all_or_none(*(put(path) for path in playlists))
    master = hls_dir / hls.MASTER
    master.write_text(hls.master_playlist(list(variants)))
    await put(master)
    await _remove_stale(storage, prefix, {key_of(path) for path in [*media, *playlists, master]})
    return HlsRecord(
        master_key=prefix + hls.MASTER,
        segment_s=round(segment_s, 3),
        variants={variant.name: _record(variant, prefix) for variant in variants},
    )


def _record(variant: hls.Variant, prefix: str) -> HlsVariant:
    return HlsVariant(
        playlist_key=f"{prefix}{variant.name}/{hls.PLAYLIST}",
        segments=variant.segments,
        bandwidth=variant.peak_bps,
        average_bandwidth=variant.average_bps,
        codecs=variant.codecs,
        width=variant.width,
        height=variant.height,
        frame_rate=variant.frame_rate,
        bytes=variant.bytes,
    )


async def _remove_stale(storage: StoragePort, prefix: str, written: set[str]) -> None:
    try:
        stale = [key for key in await storage.list_keys(prefix) if key not in written]
        if stale:
            await storage.delete(stale)
            log.info("hls.stale_removed", count=len(stale))
    except TranscoderError as exc:
        log.warning("hls.cleanup_failed", error=str(exc))
