"""S3: the source's facts, ranged and presigned GETs, verified (multipart) uploads, downloads.

Uploads are verified with S3's own CRC32 checksums, computed as the SDK streams each body from
disk (``checksum.FileSlice``), never by reading a rendition a second time:

- a single PUT declares ``ChecksumAlgorithm=CRC32``; S3 rejects a body whose CRC differs and
  returns the CRC it stored, which must equal ours;
- a multipart upload declares ``CRC32`` with ``ChecksumType=FULL_OBJECT`` on create, every part
  carries its CRC32 (S3 checks each and echoes it), and the complete request sends the whole
  object's CRC32 (combined from the parts' CRCs) and size, which S3 checks again. The checksum
  S3 reports for the object must equal ours (an emulator that answers with a ``COMPOSITE``
  checksum is checked against the composite of our part CRCs instead).

Unlike an ETag, a checksum means the same under SSE-S3, SSE-KMS and SSE-C, and a full-object
CRC32 lets any reader (the SDK validates full GETs by default) check the object end to end.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Final, cast

import aiohttp
from botocore.exceptions import ClientError

from transcoder.aws.checksum import FileSlice, composite_crc32, crc32_b64, crc32_combine
from transcoder.aws.clients import error_code, http_status, translated
from transcoder.domain.errors import AwsUnavailable, InputRejected
from transcoder.domain.job import Reason

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client
    from types_aiobotocore_s3.type_defs import (
        CompletedPartTypeDef,
        CompleteMultipartUploadOutputTypeDef,
    )

__all__ = ["FileSlice", "ObjectInfo", "Storage", "Uploaded"]

CHECKSUM_ALGORITHM: Final = "CRC32"
DELETE_BATCH: Final = 1000


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
    checksum_crc32: str  # what S3 stored, base64 (``...-N`` if it kept a composite)


@dataclass(frozen=True, slots=True)
class SentPart:
    number: int
    etag: str
    crc32: int
    size_bytes: int


def _whole_crc32(parts: list[SentPart]) -> str:
    """The full object's CRC32 from the parts' CRCs (in part order), as S3 derives it."""
    crc = parts[0].crc32
    for part in parts[1:]:
        crc = crc32_combine(crc, part.crc32, part.size_bytes)
    return crc32_b64(crc)


def mismatch(key: str, what: str, stored: str | None, expected: str) -> AwsUnavailable:
    """The bytes S3 holds are not the bytes we read: retryable, and it counts towards the DLQ."""
    return AwsUnavailable(
        f"{key}: {what} CRC32 {stored or 'missing'} != local {expected}",
        reason=Reason.AWS_ERROR,
    )


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

    # Over 40 lines: each S3 answer (412, 404, a broken body, a short read) maps to one domain
    # error here, next to the call, so the gateway never sees a botocore error.
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
        """Upload a file and prove S3 stored exactly its bytes (see the module docstring)."""
        size = path.stat().st_size
        if size < self._threshold:
            return await self._put(path, key, size, content_type)
        return await self._multipart(path, key, size, content_type)

    async def _put(self, path: Path, key: str, size: int, content_type: str) -> Uploaded:
        async with self._in_flight:
            with FileSlice(path, 0, size) as body, translated("s3.put_object"):
                response = await self._client.put_object(
                    Bucket=self.bucket,
                    Key=key,
                    Body=cast("IO[bytes]", body),
                    ContentLength=size,
                    ContentType=content_type,
                    ChecksumAlgorithm=CHECKSUM_ALGORITHM,
                )
        expected = crc32_b64(body.crc32)
        stored = response.get("ChecksumCRC32")
        if stored != expected:
            raise mismatch(key, "stored", stored, expected)
        return Uploaded(key, size, str(response.get("ETag", "")).strip('"'), 1, expected)

    async def _multipart(self, path: Path, key: str, size: int, content_type: str) -> Uploaded:
        with translated("s3.create_multipart_upload"):
            created = await self._client.create_multipart_upload(
                Bucket=self.bucket,
                Key=key,
                ContentType=content_type,
                ChecksumAlgorithm=CHECKSUM_ALGORITHM,
                ChecksumType="FULL_OBJECT",
            )
        upload_id = created["UploadId"]
        offsets = range(0, size, self._part_bytes)
        try:
            parts = await asyncio.gather(
                *(self._send_part(path, key, upload_id, n, o) for n, o in enumerate(offsets, 1))
            )
            done = await self._complete(key, upload_id, list(parts), size)
        except BaseException:
            await asyncio.shield(self._abort(key, upload_id))
            raise
        stored = done.get("ChecksumCRC32") or await self._stored_crc32(key)
        whole = _whole_crc32(parts)
        # An endpoint that predates full-object checksums keeps a composite one: accept it (with
        # or without S3's ``-N`` suffix) when it is the composite of the part CRCs we computed.
        composite = composite_crc32([p.crc32 for p in parts])
        if stored not in (whole, composite, composite.rsplit("-", 1)[0]):
            raise mismatch(key, "stored", stored, whole)
        etag = str(done.get("ETag", "")).strip('"')
        return Uploaded(key, size, etag, len(parts), stored or whole)

    async def _send_part(
        self, path: Path, key: str, upload_id: str, number: int, offset: int
    ) -> SentPart:
        async with self._in_flight:
            with FileSlice(path, offset, self._part_bytes) as body, translated("s3.upload_part"):
                part = await self._client.upload_part(
                    Bucket=self.bucket,
                    Key=key,
                    UploadId=upload_id,
                    PartNumber=number,
                    Body=cast("IO[bytes]", body),
                    ContentLength=len(body),
                    ChecksumAlgorithm=CHECKSUM_ALGORITHM,
                )
        expected = crc32_b64(body.crc32)
        if part.get("ChecksumCRC32") != expected:
            raise mismatch(key, f"part {number}", part.get("ChecksumCRC32"), expected)
        return SentPart(number, part["ETag"], body.crc32, len(body))

    async def _complete(
        self, key: str, upload_id: str, parts: list[SentPart], size: int
    ) -> CompleteMultipartUploadOutputTypeDef:
        completed: list[CompletedPartTypeDef] = [
            {"PartNumber": p.number, "ETag": p.etag, "ChecksumCRC32": crc32_b64(p.crc32)}
            for p in parts
        ]
        with translated("s3.complete_multipart_upload"):
            return await self._client.complete_multipart_upload(
                Bucket=self.bucket,
                Key=key,
                UploadId=upload_id,
                MultipartUpload={"Parts": completed},
                ChecksumCRC32=_whole_crc32(parts),
                ChecksumType="FULL_OBJECT",
                MpuObjectSize=size,
            )

    async def _stored_crc32(self, key: str) -> str | None:
        """The object's checksum from HeadObject, for endpoints (moto) that leave it out of the
        CompleteMultipartUpload answer; real S3 includes it there, so this costs AWS nothing.
        (Not pinned to the answer's VersionId: moto reports ``null`` for an unversioned bucket
        and then refuses it.)"""
        with translated("s3.head_object"):
            head = await self._client.head_object(
                Bucket=self.bucket, Key=key, ChecksumMode="ENABLED"
            )
        return head.get("ChecksumCRC32")

    async def _abort(self, key: str, upload_id: str) -> None:
        # Best effort: the bucket's lifecycle rule reaps incomplete uploads we could not abort.
        with contextlib.suppress(Exception):
            await self._client.abort_multipart_upload(
                Bucket=self.bucket, Key=key, UploadId=upload_id
            )

    async def list_keys(self, prefix: str) -> list[str]:
        """Every key under ``prefix`` (all pages)."""
        keys: list[str] = []
        paginator = self._client.get_paginator("list_objects_v2")
        with translated("s3.list_objects_v2"):
            async for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
                keys += [item["Key"] for item in page.get("Contents", []) if "Key" in item]
        return keys

    async def delete(self, keys: list[str]) -> None:
        """Delete ``keys`` (1000 per request, S3's limit); a key that is already gone is fine."""
        for start in range(0, len(keys), DELETE_BATCH):
            batch = keys[start : start + DELETE_BATCH]
            with translated("s3.delete_objects"):
                response = await self._client.delete_objects(
                    Bucket=self.bucket,
                    Delete={"Objects": [{"Key": key} for key in batch], "Quiet": True},
                )
            if response.get("Errors"):
                first = response["Errors"][0]
                raise AwsUnavailable(
                    f"s3.delete_objects: {len(response['Errors'])} keys not deleted, "
                    f"{first.get('Key')}: {first.get('Code')}",
                    reason=Reason.AWS_ERROR,
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
