"""S3: the source's facts, ranged and presigned GETs, verified (multipart) uploads, downloads.

Uploads are verified: the ETag S3 returns is recomputed locally (MD5 of the body, or for multipart
the MD5 of the parts' MD5s with a ``-N`` suffix). A matching ETag proves S3 stored exactly the
bytes sent, so no HeadObject follows (it was one more round trip per rendition). This holds for
SSE-S3 buckets, which the template creates; under SSE-KMS the ETag is not an MD5 (see
docs/operations.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, cast

import aiohttp
from botocore.exceptions import ClientError

from transcoder.aws.clients import error_code, http_status, translated
from transcoder.domain.errors import AwsUnavailable, InputRejected
from transcoder.domain.job import Reason

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client
    from types_aiobotocore_s3.type_defs import CompletedPartTypeDef


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    size_bytes: int
    etag: str
    version_id: str | None


@dataclass(frozen=True, slots=True)
class Uploaded:
    key: str
    size_bytes: int
    etag: str
    parts: int


class FileSlice(io.RawIOBase):
    """A read-only, seekable window onto part of a file: a part body streamed from disk.

    Passing a file (or a slice of one) as the request body lets the SDK and aiohttp stream it in
    small chunks, so an upload never holds a whole part or rendition in memory.
    """

    def __init__(self, path: Path, offset: int, length: int) -> None:
        super().__init__()
        self._handle = path.open("rb")
        self._start = offset
        self._length = max(0, min(length, path.stat().st_size - offset))
        self._position = 0

    def __len__(self) -> int:
        return self._length

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: self._length}[whence]
        self._position = max(0, min(self._length, base + offset))
        return self._position

    def read(self, size: int | None = -1) -> bytes:
        remaining = self._length - self._position
        size = remaining if size is None or size < 0 else min(size, remaining)
        self._handle.seek(self._start + self._position)
        data = self._handle.read(size)
        self._position += len(data)
        return data

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        self._handle.close()
        super().close()


def md5_of(path: Path, offset: int = 0, length: int | None = None) -> bytes:
    """MD5 of a file (or a window of it), read 1 MiB at a time."""
    digest = hashlib.md5(usedforsecurity=False)
    with FileSlice(path, offset, path.stat().st_size if length is None else length) as window:
        while chunk := window.read(1024**2):
            digest.update(chunk)
    return digest.digest()


class Storage:
    """One bucket's objects."""

    def __init__(
        self,
        client: S3Client,
        bucket: str,
        *,
        multipart_threshold_bytes: int = 8 * 1024**2,
        part_bytes: int = 8 * 1024**2,
        concurrency: int = 4,
    ) -> None:
        self._client = client
        self.bucket = bucket
        self._threshold = multipart_threshold_bytes
        self._part_bytes = part_bytes
        # One budget for every upload of this process: at most ``concurrency`` bodies (a part or a
        # small object, each <= max(threshold, part size)) are held in memory at once, however many
        # renditions and jobs upload in parallel. It bounds the worker's RSS.
        self._in_flight = asyncio.Semaphore(concurrency)

    async def head(self, key: str, *, version_id: str | None = None) -> ObjectInfo:
        kwargs: dict[str, Any] = {"VersionId": version_id} if version_id else {}
        try:
            with translated("s3.head_object"):
                response = await self._client.head_object(Bucket=self.bucket, Key=key, **kwargs)
        except ClientError as exc:
            if http_status(exc) == 404 or error_code(exc) in ("404", "NoSuchKey", "NotFound"):
                raise InputRejected(
                    f"s3://{self.bucket}/{key} does not exist (deleted after upload?)",
                    reason=Reason.SOURCE_NOT_FOUND,
                ) from exc
            raise  # already an AwsError naming the code
        return ObjectInfo(
            size_bytes=int(response.get("ContentLength", 0)),
            etag=str(response.get("ETag", "")).strip('"'),
            version_id=response.get("VersionId"),
        )

    async def read_range(
        self,
        key: str,
        start: int,
        end: int,
        *,
        version_id: str | None = None,
        if_match: str | None = None,
    ) -> bytes:
        """Bytes ``start..end`` (inclusive) of one version of an object.

        ``version_id`` or ``if_match`` (an ETag) pins the object: if it was replaced since the job
        was queued, S3 answers 412 and this raises ``InputRejected(source_changed)`` instead of
        returning bytes of a different upload. A missing object is ``source_not_found``.
        """
        kwargs: dict[str, Any] = {"Range": f"bytes={start}-{end}"}
        if version_id:
            kwargs["VersionId"] = version_id
        elif if_match:
            kwargs["IfMatch"] = f'"{if_match}"'
        try:
            with translated("s3.get_object"):
                response = await self._client.get_object(Bucket=self.bucket, Key=key, **kwargs)
                async with response["Body"] as body:
                    data: bytes = await body.read()
        except ClientError as exc:
            status, code = http_status(exc), error_code(exc)
            if status == 412 or code == "PreconditionFailed":
                raise InputRejected(
                    f"s3://{self.bucket}/{key} was replaced while this job read it; "
                    "the new upload is its own job",
                    reason=Reason.SOURCE_CHANGED,
                ) from exc
            if status == 404 or code in ("404", "NoSuchKey", "NoSuchVersion"):
                raise InputRejected(
                    f"s3://{self.bucket}/{key} was deleted while this job read it",
                    reason=Reason.SOURCE_NOT_FOUND,
                ) from exc
            raise  # already an AwsError naming the code
        except aiohttp.ClientError as exc:  # the body broke off mid-read
            raise AwsUnavailable(f"s3.get_object: {exc!r}") from exc
        if len(data) != end - start + 1:
            raise AwsUnavailable(
                f"s3.get_object: asked for {end - start + 1} bytes of {key}, got {len(data)}"
            )
        return data

    async def presign_get(self, key: str, *, ttl_s: int, version_id: str | None = None) -> str:
        params: dict[str, Any] = {"Bucket": self.bucket, "Key": key}
        if version_id:
            params["VersionId"] = version_id
        with translated("s3.presign"):
            url: str = await self._client.generate_presigned_url(
                "get_object", Params=params, ExpiresIn=ttl_s
            )
        return url

    async def upload(self, path: Path, key: str, *, content_type: str = "video/mp4") -> Uploaded:
        size = path.stat().st_size
        if size < self._threshold:
            async with self._in_flight:
                expected = (await asyncio.to_thread(md5_of, path)).hex()
                with FileSlice(path, 0, size) as body, translated("s3.put_object"):
                    response = await self._client.put_object(
                        Bucket=self.bucket,
                        Key=key,
                        Body=cast("IO[bytes]", body),
                        ContentLength=size,
                        ContentType=content_type,
                    )
            uploaded = Uploaded(key, size, str(response.get("ETag", "")).strip('"'), 1)
        else:
            uploaded = await self._multipart(path, key, size, content_type)
            expected = ""
        if expected and uploaded.etag != expected:
            raise AwsUnavailable(f"{uploaded.key}: ETag {uploaded.etag} != MD5 {expected}")
        return uploaded

    async def _multipart(self, path: Path, key: str, size: int, content_type: str) -> Uploaded:
        with translated("s3.create_multipart_upload"):
            created = await self._client.create_multipart_upload(
                Bucket=self.bucket, Key=key, ContentType=content_type
            )
        upload_id = created["UploadId"]
        offsets = list(range(0, size, self._part_bytes))
        digests: list[bytes] = [b""] * len(offsets)

        async def send(number: int, offset: int) -> CompletedPartTypeDef:
            async with self._in_flight:
                length = min(self._part_bytes, size - offset)
                digests[number - 1] = await asyncio.to_thread(md5_of, path, offset, length)
                with FileSlice(path, offset, length) as body, translated("s3.upload_part"):
                    part = await self._client.upload_part(
                        Bucket=self.bucket,
                        Key=key,
                        UploadId=upload_id,
                        PartNumber=number,
                        Body=cast("IO[bytes]", body),
                        ContentLength=length,
                    )
                return {"PartNumber": number, "ETag": part["ETag"]}

        try:
            parts = await asyncio.gather(*(send(n, o) for n, o in enumerate(offsets, start=1)))
            with translated("s3.complete_multipart_upload"):
                done = await self._client.complete_multipart_upload(
                    Bucket=self.bucket,
                    Key=key,
                    UploadId=upload_id,
                    MultipartUpload={"Parts": parts},
                )
        except BaseException:
            await asyncio.shield(self._abort(key, upload_id))
            raise
        etag = str(done.get("ETag", "")).strip('"')
        expected = hashlib.md5(b"".join(digests), usedforsecurity=False).hexdigest()
        if etag != f"{expected}-{len(offsets)}":
            raise AwsUnavailable(f"multipart ETag {etag} != expected {expected}-{len(offsets)}")
        return Uploaded(key, size, etag, len(offsets))

    async def _abort(self, key: str, upload_id: str) -> None:
        # Best effort: the bucket's lifecycle rule reaps incomplete uploads we could not abort.
        with contextlib.suppress(Exception):
            await self._client.abort_multipart_upload(
                Bucket=self.bucket, Key=key, UploadId=upload_id
            )

    async def download(self, key: str, path: Path) -> int:
        """Stream an object to ``path`` (1 MiB at a time, never whole in memory)."""
        total = 0
        with translated("s3.get_object"), path.open("wb") as handle:
            response = await self._client.get_object(Bucket=self.bucket, Key=key)
            async with response["Body"] as body:
                async for chunk in body.iter_chunks(1024**2):
                    handle.write(chunk)
                    total += len(chunk)
        return total
