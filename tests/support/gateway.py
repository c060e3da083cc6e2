"""Talking to the source gateway over HTTP, and the S3 objects and jobs it serves."""

from __future__ import annotations

import asyncio
import urllib.error
import urllib.request
from datetime import UTC, datetime
from typing import Any

from transcoder.aws.clients import Clients
from transcoder.aws.gateway import GatewayConfig
from transcoder.domain.job import JobMessage, derive_job_id

KiB = 1024


SMALL = GatewayConfig(block_bytes=64 * KiB, max_run_bytes=256 * KiB, cache_bytes=256 * KiB)


def fetch(url: str, headers: dict[str, str] | None = None, method: str = "GET") -> Any:
    """(status, headers, body) of one request, errors included."""

    def call() -> tuple[int, dict[str, str], bytes]:
        request = urllib.request.Request(url, headers=headers or {}, method=method)
        try:
            with urllib.request.urlopen(request, timeout=20) as response:
                return response.status, dict(response.headers), response.read()
        except urllib.error.HTTPError as error:
            return error.code, dict(error.headers), error.read()

    return asyncio.to_thread(call)


def job_for(bucket: str, key: str, etag: str) -> JobMessage:
    return JobMessage(
        job_id=derive_job_id(bucket, key, version_id=None, etag=etag),
        bucket=bucket,
        key=key,
        user_id="u",
        video_id=key.rsplit("/", 1)[-1].split(".", maxsplit=1)[0],
        source_etag=etag,
        trace_id="t",
        submitted_at=datetime.now(UTC),
    )


async def put(clients: Clients, bucket: str, key: str, body: bytes) -> str:
    response = await clients.s3.put_object(Bucket=bucket, Key=key, Body=body)
    return str(response["ETag"]).strip('"')
