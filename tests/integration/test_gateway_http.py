"""The source gateway against the moto server over real HTTP: ranges answer like S3, a replaced
upload is source_changed, never a splice, and a closed gateway keeps no buffers."""

from __future__ import annotations

import asyncio
import gc
import os
import tracemalloc

from support.gateway import SMALL, fetch, put

from transcoder.aws.clients import Clients
from transcoder.aws.gateway import SourceGateway
from transcoder.aws.storage import Storage
from transcoder.domain.errors import InputRejected
from transcoder.domain.job import Reason
from transcoder.ops.bootstrap import Resources


async def test_gateway_answers_ranges_with_the_objects_bytes(
    clients: Clients, resources: Resources
) -> None:
    data = os.urandom(1_300_000)
    etag = await put(clients, resources.bucket, "raw/u/clip.mp4", data)
    gateway = SourceGateway(
        Storage(clients.s3, resources.bucket),
        "raw/u/clip.mp4",
        size_bytes=len(data),
        etag=etag,
        config=SMALL,
    )
    async with gateway as url:
        assert url.startswith("http://127.0.0.1:") and url.endswith("/clip.mp4")
        status, headers, body = await fetch(url)
        assert (status, body, headers["Accept-Ranges"]) == (200, data, "bytes")
        status, headers, body = await fetch(url, {"Range": "bytes=100000-"})
        assert (status, body) == (206, data[100_000:])
        assert headers["Content-Range"] == f"bytes 100000-{len(data) - 1}/{len(data)}"
        status, _, body = await fetch(url, {"Range": "bytes=70000-70009"})
        assert (status, body) == (206, data[70_000:70_010])
        status, _, body = await fetch(url, {"Range": "bytes=-5"})
        assert (status, body) == (206, data[-5:])
        status, headers, _ = await fetch(url, {"Range": f"bytes={len(data)}-"})
        assert (status, headers["Content-Range"]) == (416, f"bytes */{len(data)}")
        status, headers, _ = await fetch(url, method="HEAD")
        assert (status, int(headers["Content-Length"])) == (200, len(data))
        assert (await fetch(url.rsplit("/", 2)[0] + "/guess/clip.mp4"))[0] == 404
        # A reader that hangs up mid-body (ffmpeg seeking) leaves nothing running behind it.
        host, port = url.split("/")[2].split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        path = "/" + url.split("/", 3)[3]
        writer.write(f"GET {path} HTTP/1.1\r\nRange: bytes=0-\r\n\r\n".encode())
        await reader.readexactly(1000)
        writer.close()
        await writer.wait_closed()
    assert gateway.failure is None


async def test_an_upload_replaced_mid_read_is_source_changed_not_a_splice(
    clients: Clients, resources: Resources
) -> None:
    first = os.urandom(600_000)
    etag = await put(clients, resources.bucket, "raw/u/v.mp4", first)
    storage = Storage(clients.s3, resources.bucket)
    gateway = SourceGateway(storage, "raw/u/v.mp4", size_bytes=len(first), etag=etag, config=SMALL)
    async with gateway as url:
        status, _, body = await fetch(url, {"Range": "bytes=0-999"})
        assert (status, body) == (206, first[:1000])
        await put(clients, resources.bucket, "raw/u/v.mp4", os.urandom(600_000))
        status, _, _ = await fetch(url, {"Range": "bytes=500000-"})
    assert status == 412
    assert isinstance(gateway.failure, InputRejected)
    assert gateway.failure.reason is Reason.SOURCE_CHANGED


async def test_a_closed_gateway_keeps_no_buffers_even_when_readers_hang_up(
    clients: Clients, resources: Resources
) -> None:
    """ffmpeg hangs up at every seek; finished jobs' reads must not pile up in memory.

    The garbage collector is off here, so anything held by a reference cycle stays and counts.
    """
    data = os.urandom(3 * 1024 * 1024)
    etag = await put(clients, resources.bucket, "raw/u/leak.mp4", data)
    storage = Storage(clients.s3, resources.bucket)
    host_path = ""

    async def hang_up(url: str) -> None:
        host, port = url.split("/")[2].split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(f"GET {host_path} HTTP/1.1\r\nRange: bytes=0-\r\n\r\n".encode())
        await reader.readexactly(300_000)
        writer.transport.abort()  # unread bytes left behind: the gateway sees a reset

    gc.collect()
    gc.disable()
    tracemalloc.start()
    try:
        baseline = tracemalloc.get_traced_memory()[0]
        for _ in range(6):
            async with SourceGateway(
                storage, "raw/u/leak.mp4", size_bytes=len(data), etag=etag
            ) as url:
                host_path = "/" + url.split("/", 3)[3]
                for _ in range(3):
                    await hang_up(url)
                status, _, body = await fetch(url, {"Range": "bytes=2000000-"})
                assert (status, body) == (206, data[2_000_000:])
                await asyncio.sleep(0.2)  # let every handler see its reset
        del body
        retained = tracemalloc.get_traced_memory()[0] - baseline
    finally:
        tracemalloc.stop()
        gc.enable()
    # What the last job's hang-ups left for the collector (0.3-5.4 MB seen) may wait for it; six
    # jobs' worth of reads may not (the cycle this guards against kept 19 MB here).
    assert retained < 8 * 1024 * 1024, f"{retained} bytes kept after six jobs"
