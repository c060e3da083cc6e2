"""``all_or_none``: a failed upload stops its siblings and its own error reaches the decision."""

from __future__ import annotations

import asyncio

import pytest

from transcoder.domain.errors import AwsUnavailable
from transcoder.runtime.tasks import all_or_none


async def test_every_result_comes_back_in_order() -> None:
    async def value(n: int) -> int:
        await asyncio.sleep(0.01 * (3 - n))
        return n

    assert await all_or_none(value(1), value(2), value(3)) == [1, 2, 3]


async def test_a_failure_stops_the_others_and_is_raised_as_it_was() -> None:
    stopped: list[str] = []

    async def slow(name: str) -> None:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            stopped.append(name)
            raise

    async def failing() -> None:
        await asyncio.sleep(0)
        raise AwsUnavailable("S3 PutObject: SlowDown")

    with pytest.raises(AwsUnavailable, match="SlowDown"):  # not an ExceptionGroup
        await asyncio.wait_for(all_or_none(slow("a"), failing(), slow("b")), timeout=5)
    assert sorted(stopped) == ["a", "b"]  # and both were stopped before it was raised
