"""Uploads are proved by S3's own CRC32 checksums, computed while the body streams once.

Against the moto server over real HTTP with the production clients: a single PUT and a
multipart upload above the threshold store a CRC32 equal to the file's (the multipart one as a
full-object checksum), the bytes come back identical, and a part whose declared checksum is
wrong fails the upload as retryable and leaves nothing behind. Over TLS, as against AWS, the SDK
sends the CRC as an aws-chunked trailer, and every byte of a rendition is read from disk once.
"""

from __future__ import annotations

import io
import os
import ssl
import subprocess
import sys
import time
import urllib.request
import zlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import pytest
from aiobotocore.session import get_session
from hypothesis import given
from hypothesis import settings as examples
from hypothesis import strategies as st

from transcoder.aws import checksum
from transcoder.aws.checksum import FileSlice, composite_crc32, crc32_b64, crc32_combine
from transcoder.aws.clients import Clients, client_config
from transcoder.aws.storage import Storage
from transcoder.config import Settings
from transcoder.domain.errors import InputRejected, RetryableError
from transcoder.domain.job import Reason
from transcoder.ops.bootstrap import Resources
from transcoder.ops.emulator import free_port

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client

MIB = 1024**2


@examples(max_examples=200, deadline=None)
@given(st.binary(max_size=3000), st.binary(max_size=3000))
def test_crc32_combine_equals_the_crc_of_the_concatenation(first: bytes, second: bytes) -> None:
    combined = crc32_combine(zlib.crc32(first), zlib.crc32(second), len(second))
    assert combined == zlib.crc32(first + second)


def test_crc32_combine_over_part_sized_lengths() -> None:
    first, second = os.urandom(5 * MIB + 3), os.urandom(7 * MIB + 1)
    combined = crc32_combine(zlib.crc32(first), zlib.crc32(second), len(second))
    assert combined == zlib.crc32(first + second)


def test_crc32_wire_forms() -> None:
    assert crc32_b64(zlib.crc32(b"Hello World")) == "ShexVg=="  # S3's documented example
    crcs = [zlib.crc32(b"a"), zlib.crc32(b"b")]
    joined = b"".join(c.to_bytes(4, "big") for c in crcs)
    assert composite_crc32(crcs) == f"{crc32_b64(zlib.crc32(joined))}-2"


def test_file_slice_hashes_what_was_read_through_it(tmp_path: Path) -> None:
    path = tmp_path / "data.bin"
    data = os.urandom(100_000)
    path.write_bytes(data)
    window = data[1_000:61_000]
    with FileSlice(path, 1_000, 60_000) as body:
        with pytest.raises(RuntimeError):
            _ = body.crc32  # nothing read yet
        while body.read(7_000):
            pass
        assert body.crc32 == zlib.crc32(window)
        body.seek(0)  # the SDK's second pass (checksum, then send) or a retry
        assert body.read(10) == window[:10]
        body.seek(30_000)
        body.read(5)  # a read past a gap: the CRC no longer covers the window
        with pytest.raises(RuntimeError):
            _ = body.crc32
        body.seek(0)
        assert body.read() == window
        assert body.crc32 == zlib.crc32(window)
        body.seek(-5, io.SEEK_END)
        body.read()  # re-reading bytes already hashed changes nothing
        assert body.crc32 == zlib.crc32(window)


async def stored_checksum(clients: Clients, bucket: str, key: str) -> dict[str, Any]:
    head = await clients.s3.head_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")
    return {"crc32": head.get("ChecksumCRC32"), "type": head.get("ChecksumType")}


async def test_a_single_put_stores_the_files_crc32(
    clients: Clients, resources: Resources, tmp_path: Path
) -> None:
    data = os.urandom(300_000)
    path = tmp_path / "small.mp4"
    path.write_bytes(data)
    storage = Storage(clients.s3, resources.bucket)
    uploaded = await storage.upload(path, "transcoded/720p/u/small.mp4")
    expected = crc32_b64(zlib.crc32(data))
    assert (uploaded.parts, uploaded.checksum_crc32) == (1, expected)
    assert (await stored_checksum(clients, resources.bucket, uploaded.key))["crc32"] == expected


async def test_a_multipart_upload_stores_a_full_object_crc32_and_the_same_bytes(
    clients: Clients, resources: Resources, tmp_path: Path
) -> None:
    data = os.urandom(11 * MIB + 17)  # three parts of 5 MiB, the last one short
    path = tmp_path / "big.mp4"
    path.write_bytes(data)
    storage = Storage(
        clients.s3, resources.bucket, multipart_threshold_bytes=5 * MIB, part_bytes=5 * MIB
    )
    key = "transcoded/1080p/u/big.mp4"
    uploaded = await storage.upload(path, key)

    expected = crc32_b64(zlib.crc32(data))
    assert (uploaded.parts, uploaded.size_bytes, uploaded.checksum_crc32) == (
        3,
        len(data),
        expected,
    )
    stored = await stored_checksum(clients, resources.bucket, key)
    assert stored == {"crc32": expected, "type": "FULL_OBJECT"}
    # The SDK validates a full GET against that checksum when asked; the bytes are identical.
    response = await clients.s3.get_object(Bucket=resources.bucket, Key=key, ChecksumMode="ENABLED")
    async with response["Body"] as body:
        assert await body.read() == data
    copy = tmp_path / "copy.mp4"
    assert await storage.download(key, copy) == len(data)
    assert copy.read_bytes() == data
    pending = await clients.s3.list_multipart_uploads(Bucket=resources.bucket)
    assert not pending.get("Uploads")


class WrongPartChecksum:
    """The production client, except that one UploadPart declares a CRC32 its body does not have.

    Real S3 refuses such a part (``BadDigest``, which ``translated`` makes a retryable
    ``aws_error``); moto stores whatever is declared, so the checksum S3 echoes differs from the
    one computed as the body streamed, and the upload must refuse to call that a success.
    """

    def __init__(self, client: S3Client, part_number: int) -> None:
        self._client = client
        self._part_number = part_number

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    async def upload_part(self, **kwargs: Any) -> Any:
        if kwargs["PartNumber"] == self._part_number:
            kwargs["ChecksumCRC32"] = crc32_b64(0xDEADBEEF)
        return await self._client.upload_part(**kwargs)


async def test_a_part_with_a_wrong_checksum_fails_retryable_and_leaves_nothing(
    clients: Clients, resources: Resources, tmp_path: Path
) -> None:
    path = tmp_path / "big.mp4"
    path.write_bytes(os.urandom(10 * MIB + 1))
    tampered = cast("S3Client", WrongPartChecksum(clients.s3, part_number=2))
    storage = Storage(
        tampered, resources.bucket, multipart_threshold_bytes=5 * MIB, part_bytes=5 * MIB
    )
    key = "transcoded/720p/u/corrupt.mp4"
    with pytest.raises(RetryableError) as caught:
        await storage.upload(path, key)
    assert caught.value.reason is Reason.AWS_ERROR
    assert "part 2" in str(caught.value)
    with pytest.raises(InputRejected):  # nothing was published under the key
        await Storage(clients.s3, resources.bucket).head(key)
    pending = await clients.s3.list_multipart_uploads(Bucket=resources.bucket)
    assert not pending.get("Uploads")  # the upload was aborted


@pytest.fixture(scope="module")
def tls_endpoint() -> Iterator[str]:
    """A second moto server, this one on HTTPS (a self-signed certificate)."""
    port = free_port()
    command = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port), "--ssl"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"https://127.0.0.1:{port}"
    unverified = ssl._create_unverified_context()  # noqa: S323 - our own loopback test server
    try:
        for _ in range(150):
            try:
                with urllib.request.urlopen(f"{url}/moto-api/", timeout=1, context=unverified):
                    break
            except OSError:
                time.sleep(0.2)
        else:
            pytest.fail("moto --ssl did not start")
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture
async def tls_s3(tls_endpoint: str, settings: Settings) -> AsyncIterator[S3Client]:
    tls_settings = settings.model_copy(update={"endpoint_url": tls_endpoint})
    async with get_session().create_client(
        "s3",
        endpoint_url=tls_endpoint,
        verify=False,
        config=client_config(tls_settings, max_attempts=1),
    ) as s3:
        await s3.create_bucket(Bucket=settings.bucket)
        yield s3


@pytest.mark.parametrize("size_bytes", [3 * MIB, 11 * MIB + 5])
async def test_over_tls_every_byte_is_read_from_disk_once(
    tls_s3: S3Client,
    settings: Settings,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    size_bytes: int,
) -> None:
    read_bytes = 0
    original = checksum.FileSlice.read

    def counting(self: FileSlice, size: int | None = -1) -> bytes:
        nonlocal read_bytes
        data = original(self, size)
        read_bytes += len(data)
        return data

    monkeypatch.setattr(checksum.FileSlice, "read", counting)
    data = os.urandom(size_bytes)
    path = tmp_path / "r.mp4"
    path.write_bytes(data)
    storage = Storage(
        tls_s3, settings.bucket, multipart_threshold_bytes=5 * MIB, part_bytes=5 * MIB
    )
    uploaded = await storage.upload(path, "transcoded/720p/u/tls.mp4")
    assert read_bytes == size_bytes  # the SDK hashed the body as it sent it: no second pass
    assert uploaded.checksum_crc32 == crc32_b64(zlib.crc32(data))
    head = await tls_s3.head_object(
        Bucket=settings.bucket, Key=uploaded.key, ChecksumMode="ENABLED"
    )
    assert head.get("ChecksumCRC32") == uploaded.checksum_crc32


class ReportsChecksum:
    """The production client, except that CompleteMultipartUpload reports ``checksum``: what an
    endpoint that predates full-object checksums (LocalStack 3.8) answers."""

    def __init__(self, client: S3Client, checksum: str) -> None:
        self._client = client
        self._checksum = checksum

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    async def complete_multipart_upload(self, **kwargs: Any) -> Any:
        done = dict(await self._client.complete_multipart_upload(**kwargs))
        done["ChecksumCRC32"] = self._checksum
        return done


@pytest.mark.parametrize("suffix", ["-3", ""])
async def test_a_composite_checksum_of_the_parts_is_accepted_and_another_refused(
    clients: Clients, resources: Resources, tmp_path: Path, suffix: str
) -> None:
    data = os.urandom(11 * MIB)
    path = tmp_path / "big.mp4"
    path.write_bytes(data)
    part_crcs = [zlib.crc32(data[o : o + 5 * MIB]) for o in range(0, len(data), 5 * MIB)]
    composite = crc32_b64(zlib.crc32(b"".join(c.to_bytes(4, "big") for c in part_crcs)))

    def storage(reported: str) -> Storage:
        client = cast("S3Client", ReportsChecksum(clients.s3, reported))
        return Storage(
            client, resources.bucket, multipart_threshold_bytes=5 * MIB, part_bytes=5 * MIB
        )

    uploaded = await storage(composite + suffix).upload(path, "transcoded/720p/u/old.mp4")
    assert uploaded.checksum_crc32 == composite + suffix
    with pytest.raises(RetryableError) as caught:
        await storage(crc32_b64(zlib.crc32(b"other")) + suffix).upload(
            path, "transcoded/720p/u/x.mp4"
        )
    assert caught.value.reason is Reason.AWS_ERROR
