"""``transcoder demo --out``'s export against the emulator: what lands in DIR for a record.

No ffmpeg: the objects are small stand-in bytes at the keys the worker publishes, so what is checked
is which objects are fetched and where they go, not what they contain.
"""

from __future__ import annotations

from pathlib import Path

from transcoder.aws.clients import Clients
from transcoder.aws.storage import Storage
from transcoder.config import Settings
from transcoder.domain.job import (
    HlsRecord,
    HlsVariant,
    PosterRecord,
    RenditionRecord,
    RenditionStatus,
    Status,
    ThumbnailsRecord,
    hls_prefix,
    output_key,
    poster_key,
    thumbnails_prefix,
)
from transcoder.domain.record import JobRecord
from transcoder.ops.bootstrap import Resources
from transcoder.ops.demo import export

HLS = hls_prefix("u1", "clip")
THUMBS = thumbnails_prefix("u1", "clip")
OBJECTS = {
    output_key("720p", "u1", "clip"): b"mp4 720p",
    poster_key("u1", "clip"): b"jpeg",
    THUMBS + "sprite.jpg": b"sprite",
    THUMBS + "thumbnails.vtt": b"WEBVTT\n",
    HLS + "master.m3u8": b"#EXTM3U\n720p/index.m3u8\n",
    HLS + "720p/index.m3u8": b"#EXTM3U\n",
    HLS + "720p/init.mp4": b"init",
    HLS + "720p/seg_00000.m4s": b"seg0",
    HLS + "720p/seg_00001.m4s": b"seg1",
}


def record() -> JobRecord:
    return JobRecord(
        user_id="u1",
        video_id="clip",
        status=Status.COMPLETED,
        renditions={
            "720p": RenditionRecord(
                status=RenditionStatus.COMPLETED,
                key=output_key("720p", "u1", "clip"),
                width=1280,
                height=720,
                bytes=8,
            ),
            "1080p": RenditionRecord(status=RenditionStatus.SKIPPED, reason="no upscaling"),
        },
        poster=PosterRecord(key=poster_key("u1", "clip"), width=1280, height=720, bytes=4),
        thumbnails=ThumbnailsRecord(
            sprite_key=THUMBS + "sprite.jpg",
            vtt_key=THUMBS + "thumbnails.vtt",
            interval_s=1.0,
            count=1,
            tile_width=160,
            tile_height=90,
            columns=1,
            rows=1,
            bytes=6,
        ),
        hls=HlsRecord(
            master_key=HLS + "master.m3u8",
            segment_s=2.0,
            variants={
                "720p": HlsVariant(
                    playlist_key=HLS + "720p/index.m3u8",
                    segments=2,
                    bandwidth=1,
                    codecs="avc1.64001f",
                    width=1280,
                    height=720,
                    bytes=1,
                )
            },
        ),
    )


async def test_export_downloads_the_record_outputs_and_the_whole_hls_tree(
    clients: Clients, settings: Settings, resources: Resources, tmp_path: Path
) -> None:
    neighbours = {
        HLS: b"",  # a folder marker some S3 tools create: not a file
        hls_prefix("u1", "clip-2") + "master.m3u8": b"another video's stream",
        output_key("1080p", "u1", "clip"): b"not in the record",
    }
    for key, body in {**OBJECTS, **neighbours}.items():
        await clients.s3.put_object(Bucket=settings.bucket, Key=key, Body=body)
    out = tmp_path / "out"

    page = await export(clients.s3, Storage(clients.s3, settings.bucket), [(record(), "c")], out)

    written = {
        p.relative_to(out).as_posix(): p.read_bytes()
        for p in out.rglob("*")
        if p.is_file() and p.parent != out
    }
    assert written == {
        "clip/720p.mp4": b"mp4 720p",
        "clip/poster.jpg": b"jpeg",
        "clip/thumbnails/sprite.jpg": b"sprite",
        "clip/thumbnails/thumbnails.vtt": b"WEBVTT\n",
        "clip/hls/master.m3u8": b"#EXTM3U\n720p/index.m3u8\n",
        "clip/hls/720p/index.m3u8": b"#EXTM3U\n",
        "clip/hls/720p/init.mp4": b"init",
        "clip/hls/720p/seg_00000.m4s": b"seg0",
        "clip/hls/720p/seg_00001.m4s": b"seg1",
    }
    assert page == out / "index.html"
    assert {p.name for p in out.iterdir() if p.is_file()} == {
        "index.html",
        "player.js",
        "player.css",
        "hls.light.min.js",
        "LICENSE.hls.js.txt",
    }
    assert 'data-master="clip/hls/master.m3u8"' in page.read_text()
