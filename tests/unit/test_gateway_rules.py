"""The source gateway without the emulator: Range parsing like S3, retries of a read that breaks off
(a flaky fake storage), and when a read that failed overrides ffprobe's or ffmpeg's verdict."""

from __future__ import annotations

import asyncio
import dataclasses
import os
from typing import Any, cast

import pytest
from support.gateway import SMALL, fetch

from transcoder.aws.gateway import RangeNotSatisfiable, SourceGateway, parse_range
from transcoder.aws.storage import Storage
from transcoder.domain.errors import AwsUnavailable, InputRejected, TranscoderError
from transcoder.domain.job import Reason
from transcoder.runtime.pipeline import from_source
from transcoder.runtime.publish import Encoded


def test_range_headers_parse_like_s3() -> None:
    assert parse_range(None, 100) is None
    assert parse_range("bytes=0-", 100) == (0, 99)
    assert parse_range("bytes=10-19", 100) == (10, 19)
    assert parse_range("bytes=90-500", 100) == (90, 99)
    assert parse_range("bytes=-10", 100) == (90, 99)
    assert parse_range("bytes=0-1,5-6", 100) is None  # several ranges: the whole object
    for unsatisfiable in ("bytes=100-", "bytes=20-10", "bytes=-0"):
        with pytest.raises(RangeNotSatisfiable):
            parse_range(unsatisfiable, 100)


class FlakyStorage:
    """Serves bytes from memory; the first ``failures`` reads break off like a dropped body."""

    def __init__(self, data: bytes, failures: int) -> None:
        self.data, self.failures, self.calls = data, failures, 0

    async def read_range(self, key: str, start: int, end: int, **_: Any) -> bytes:
        self.calls += 1
        if self.calls <= self.failures:
            raise AwsUnavailable("s3.get_object: connection reset mid-body")
        return self.data[start : end + 1]


async def test_a_read_that_breaks_off_is_retried_and_a_dead_s3_is_a_503() -> None:
    data = os.urandom(300_000)
    flaky = FlakyStorage(data, failures=2)
    gateway = SourceGateway(cast(Storage, flaky), "k.mp4", size_bytes=len(data), config=SMALL)
    async with gateway as url:
        status, _, body = await fetch(url)
    assert (status, body) == (200, data)
    assert gateway.failure is None

    dead = FlakyStorage(data, failures=10**6)
    gateway = SourceGateway(cast(Storage, dead), "k.mp4", size_bytes=len(data), config=SMALL)
    async with gateway as url:
        status, _, _ = await fetch(url)
    assert status == 503  # libavformat reconnects on 5xx, then fails retryable
    assert isinstance(gateway.failure, AwsUnavailable)


class Reads:
    """What ``from_source`` sees of a gateway."""

    def __init__(self) -> None:
        self.failure: TranscoderError | None = None
        self.failed = asyncio.Event()

    def fail(self, exc: TranscoderError) -> None:
        self.failure = exc
        self.failed.set()


ENCODED = cast(Encoded, object())


def encoded() -> Encoded:
    return ENCODED


async def stage(result: Encoded | TranscoderError, reads: Reads | None = None) -> Encoded:
    """A probe-and-transcode stage: the gateway fails while it runs, then ffprobe concludes."""
    if reads is not None:
        reads.fail(AwsUnavailable("s3.get_object: SlowDown (503)"))
    await asyncio.sleep(0)
    if isinstance(result, TranscoderError):
        raise result
    return result


@pytest.mark.parametrize(
    "reason",
    [
        Reason.TRUNCATED,
        Reason.NOT_A_VIDEO,
        Reason.UNDECODABLE,
        Reason.NO_VIDEO_STREAM,
        Reason.UNSUPPORTED_CODEC,
    ],
)
async def test_a_media_verdict_on_bytes_s3_did_not_serve_is_a_retry(reason: Reason) -> None:
    verdict = InputRejected("moov atom not found", reason=reason)
    reads = Reads()
    with pytest.raises(AwsUnavailable) as raised:
        await from_source(stage(verdict, reads), reads)
    assert raised.value.retryable and raised.value.__cause__ is verdict
    with pytest.raises(InputRejected):  # every byte served: the verdict stands
        await from_source(stage(verdict), Reads())


async def test_a_clean_exit_after_a_failed_read_is_not_trusted_either() -> None:
    reads = Reads()
    with pytest.raises(AwsUnavailable):
        await from_source(stage(encoded(), reads), reads)
    assert await from_source(stage(encoded()), Reads()) is encoded()
    assert await from_source(stage(encoded()), None) is encoded()  # presigned: ffmpeg alone


async def test_the_stage_is_stopped_as_soon_as_a_read_fails_for_good() -> None:
    reads, stopped = Reads(), asyncio.Event()

    async def ffmpeg_reconnecting() -> Encoded:
        try:
            await asyncio.sleep(3600)
        finally:
            stopped.set()
        raise AssertionError("unreachable")

    replaced = InputRejected("replaced", reason=Reason.SOURCE_CHANGED)
    asyncio.get_running_loop().call_soon(reads.fail, replaced)
    with pytest.raises(InputRejected) as raised:
        await from_source(ffmpeg_reconnecting(), reads)
    assert raised.value is replaced and stopped.is_set()  # permanent: the object changed


class HungStorage:
    """S3 that never answers a read past the first block."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    async def read_range(self, key: str, start: int, end: int, **_: Any) -> bytes:
        if start > 0:
            await asyncio.sleep(3600)
        return self.data[start : end + 1]


async def test_a_read_s3_never_answers_ends_at_its_deadline() -> None:
    data = os.urandom(300_000)
    config = dataclasses.replace(SMALL, read_timeout_s=0.05)
    gateway = SourceGateway(
        cast(Storage, HungStorage(data)), "k", size_bytes=len(data), config=config
    )
    async with gateway as url:
        status, _, _ = await fetch(url, headers={"Range": f"bytes={len(data) // 2}-"})
    assert status == 503
    assert isinstance(gateway.failure, AwsUnavailable) and gateway.failed.is_set()
    assert "no answer within" in str(gateway.failure)
