"""The source gateway without the emulator: Range parsing like S3, retries of a read that breaks off
(a flaky fake storage), and when the gateway is blamed for a failed encode."""

from __future__ import annotations

import os
from typing import Any, cast

import pytest
from support.gateway import SMALL, fetch

from transcoder.aws.gateway import RangeNotSatisfiable, SourceGateway, parse_range
from transcoder.aws.storage import Storage
from transcoder.domain.errors import AwsUnavailable, FfmpegFailed, InputRejected
from transcoder.domain.job import Reason
from transcoder.runtime.pipeline import blame


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


def test_the_gateway_is_blamed_only_when_it_says_more_than_ffmpeg() -> None:
    replaced = InputRejected("replaced", reason=Reason.SOURCE_CHANGED)
    s3_down = AwsUnavailable("s3.get_object: SlowDown (503)")
    ffmpeg_says_5xx = FfmpegFailed("transcode: Server returned 5XX Server Error reply")
    undecodable = InputRejected("damaged", reason=Reason.UNDECODABLE)
    assert blame(ffmpeg_says_5xx, None) is ffmpeg_says_5xx
    assert blame(ffmpeg_says_5xx, replaced) is replaced  # permanent, and the real cause
    assert blame(ffmpeg_says_5xx, s3_down) is s3_down  # both retryable: the gateway is specific
    assert blame(undecodable, s3_down) is undecodable  # a transient S3 error earlier: not the cause
    assert blame(undecodable, replaced) is replaced
