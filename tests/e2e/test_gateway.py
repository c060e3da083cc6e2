"""The source gateway end to end: ffprobe and ffmpeg read S3 objects through the worker on loopback.

Against the moto server over real HTTP, with the real ffprobe and ffmpeg: each source byte is read
from S3 about once per job (the presigned design read 1.5 x), a replaced or deleted upload is a
typed permanent failure, and the presigned path still transcodes.
"""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

import pytest
from support.gateway import KiB, job_for, put

from transcoder.aws.clients import Clients
from transcoder.aws.gateway import GatewayConfig, SourceGateway
from transcoder.aws.storage import Storage
from transcoder.config import Settings
from transcoder.domain.errors import InputRejected
from transcoder.domain.job import Reason, SourceFacts
from transcoder.media import probe
from transcoder.media.progress import Progress
from transcoder.ops.bootstrap import Resources
from transcoder.runtime.app import pipeline_config
from transcoder.runtime.pipeline import Pipeline, PipelineResult


@pytest.mark.parametrize(
    ("sample", "kind"), [("bigbuckbunny", "moov at the end"), ("city", "MPEG-PS")]
)
async def test_ffprobe_then_ffmpeg_read_each_source_byte_about_once(
    clients: Clients, resources: Resources, samples: dict[str, Path], sample: str, kind: str
) -> None:
    data = samples[sample].read_bytes()
    key = f"raw/u/{samples[sample].name}"
    etag = await put(clients, resources.bucket, key, data)
    storage = Storage(clients.s3, resources.bucket)
    gateway = SourceGateway(storage, key, size_bytes=len(data), etag=etag)
    async with gateway as url:
        media = probe.parse(await probe.run(url, timeout_s=60), size_bytes=len(data))
        process = await asyncio.create_subprocess_exec(
            *("ffmpeg", "-v", "error", "-i", url, "-map", "0:v:0", "-f", "framemd5", "-"),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    frames = sum(1 for line in out.decode().splitlines() if line and not line.startswith("#"))
    assert media.frame_count is None or frames == media.frame_count, kind
    # Every byte decoded, once: ffprobe's reads were served again to ffmpeg from the cache.
    assert len(data) <= gateway.bytes_read <= 1.05 * len(data), (kind, gateway.bytes_read)


async def test_a_deleted_upload_is_source_not_found_for_ffprobe(
    clients: Clients, resources: Resources, samples: dict[str, Path]
) -> None:
    data = samples["bikes"].read_bytes()
    etag = await put(clients, resources.bucket, "raw/u/gone.mp4", data)
    storage = Storage(clients.s3, resources.bucket)
    await clients.s3.delete_object(Bucket=resources.bucket, Key="raw/u/gone.mp4")
    gateway = SourceGateway(storage, "raw/u/gone.mp4", size_bytes=len(data), etag=etag)
    async with gateway as url:
        with pytest.raises(InputRejected) as caught:
            await probe.run(url, timeout_s=60)
    assert caught.value.reason is Reason.SOURCE_NOT_FOUND


async def test_the_pipeline_reports_a_replaced_upload_as_source_changed(
    clients: Clients, resources: Resources, settings: Settings, samples: dict[str, Path]
) -> None:
    """ffmpeg only sees HTTP 412; the job fails permanently with the gateway's reason."""
    data = samples["bigbuckbunny"].read_bytes()
    key = "raw/u/replaced.mp4"
    etag = await put(clients, resources.bucket, key, data)
    storage = Storage(clients.s3, resources.bucket)
    config = pipeline_config(settings)
    tiny = GatewayConfig(block_bytes=64 * KiB, max_run_bytes=64 * KiB, cache_bytes=64 * KiB)
    pipeline = Pipeline(storage, dataclasses.replace(config, gateway=tiny))
    message = job_for(resources.bucket, key, etag)

    async def replace(_: SourceFacts) -> None:  # after the probe, before ffmpeg reads
        await put(clients, resources.bucket, key, samples["bikes"].read_bytes())

    with pytest.raises(InputRejected) as caught:
        await pipeline.run(message, Progress(), replace)
    assert caught.value.reason is Reason.SOURCE_CHANGED
    assert "replaced while this job read it" in str(caught.value)


async def test_the_presigned_path_still_transcodes(
    clients: Clients, resources: Resources, settings: Settings, samples: dict[str, Path]
) -> None:
    """TRANSCODER_SOURCE_ACCESS=presigned: ffmpeg reads S3 itself, with no gateway."""
    data = samples["bikes"].read_bytes()
    key = "raw/u/presigned.mp4"
    etag = await put(clients, resources.bucket, key, data)
    config = dataclasses.replace(pipeline_config(settings), source_access="presigned")
    pipeline = Pipeline(Storage(clients.s3, resources.bucket), config)
    message = job_for(resources.bucket, key, etag)
    seen: list[SourceFacts] = []

    async def record(facts: SourceFacts) -> None:
        seen.append(facts)

    result = await pipeline.run(message, Progress(), record)
    assert isinstance(result, PipelineResult)
    assert [f.size_bytes for f in seen] == [len(data)]
    made = result.published.renditions["720p"]
    assert made.status == "COMPLETED"
    assert (made.width, made.height) == (640, 272)
