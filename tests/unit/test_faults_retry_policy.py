"""The retry policy and settling under faults, with fakes (no AWS, no ffmpeg).

* give-backs that are not the job's fault never spend the last allowed receive;
* a transient failure while settling resumes at the step that failed, never re-running a fenced
  write that already happened;
* backoff grows with the receive count, with jitter, inside its bounds.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from typing import Any, cast

import pytest

from transcoder.aws.queue import Delivery
from transcoder.aws.status import Lease
from transcoder.domain.errors import AwsUnavailable, LeaseLost
from transcoder.domain.job import ErrorInfo, Reason, RenditionRecord, RenditionStatus
from transcoder.runtime.pipeline import PipelineResult
from transcoder.runtime.settlement import (
    Outcome,
    Settlement,
    Settler,
    backoff_s,
    held_delay_s,
    spares_receive,
)

LEASE = Lease("u1", "v1", "w1", 1)
RESULT = PipelineResult(
    source=cast(Any, None),
    renditions={"720p": RenditionRecord(status=RenditionStatus.COMPLETED, key="k")},
)
AWS_DOWN = ErrorInfo(code=Reason.AWS_UNAVAILABLE, message="503", retryable=True)
CRASH = ErrorInfo(code=Reason.INTERNAL_ERROR, message="bug", retryable=True)


def delivery(receive_count: int) -> Delivery:
    return Delivery("m1", "rh1", '{"job": 1}', receive_count, time.monotonic())


@dataclass
class Recorder:
    """Both fakes: records calls; ``failures`` maps a call name to exceptions to raise first."""

    calls: list[tuple[str, Any]] = field(default_factory=list)
    failures: dict[str, list[Exception]] = field(default_factory=dict)

    async def _call(self, name: str, value: Any = None) -> None:
        self.calls.append((name, value))
        pending = self.failures.get(name)
        if pending:
            raise pending.pop(0)

    async def delete(self, d: Delivery) -> None:
        await self._call("delete")

    async def set_visibility(self, d: Delivery, seconds: int) -> None:
        await self._call("visibility", seconds)

    async def requeue(self, d: Delivery, *, delay_s: int = 0) -> str:
        await self._call("requeue", delay_s)
        return "m2"

    async def mark_completed(self, lease: Lease, renditions: Any) -> None:
        await self._call("mark_completed")

    async def release(self, lease: Lease, error: ErrorInfo | None) -> None:
        await self._call("release")


def settler(recorder: Recorder) -> Settler:
    return Settler(cast(Any, recorder), cast(Any, recorder), max_receive_count=3)


@pytest.mark.parametrize(
    ("settlement", "expected"),
    [
        (
            Settlement(Outcome.HANDED_BACK, delivery(2), LEASE),
            [("release", None), ("visibility", 0)],
        ),
        (Settlement(Outcome.HANDED_BACK, delivery(3), LEASE), [("release", None), ("requeue", 0)]),
        (Settlement(Outcome.HELD, delivery(3), delay_s=40), [("requeue", 40)]),
        (Settlement(Outcome.DEFERRED, delivery(3), error=AWS_DOWN, delay_s=7), [("requeue", 7)]),
        # a crash may be the job's fault: it spends the receive like any failure
        (Settlement(Outcome.DEFERRED, delivery(3), error=CRASH, delay_s=7), [("visibility", 7)]),
    ],
)
async def test_give_backs_never_spend_the_last_receive(
    settlement: Settlement, expected: list[tuple[str, Any]]
) -> None:
    recorder = Recorder()
    await settler(recorder).commit(settlement)
    assert recorder.calls == expected


def test_which_outcomes_spare_the_receive() -> None:
    assert spares_receive(Settlement(Outcome.HANDED_BACK, delivery(1)))
    assert spares_receive(Settlement(Outcome.HELD, delivery(1)))
    assert not spares_receive(Settlement(Outcome.RETRY, delivery(1), error=AWS_DOWN))
    assert not spares_receive(Settlement(Outcome.DEFERRED, delivery(1), error=CRASH))


async def test_a_retry_resumes_at_the_step_that_failed() -> None:
    recorder = Recorder(failures={"delete": [AwsUnavailable("503")]})
    settled = await settler(recorder).commit(
        Settlement(Outcome.COMPLETED, delivery(1), LEASE, result=RESULT)
    )
    assert settled.outcome is Outcome.COMPLETED
    assert recorder.calls == [("mark_completed", None), ("delete", None), ("delete", None)]


async def test_a_refused_fenced_write_becomes_lease_lost_and_touches_nothing() -> None:
    recorder = Recorder(failures={"mark_completed": [LeaseLost("attempt 2 owns it")]})
    settled = await settler(recorder).commit(
        Settlement(Outcome.COMPLETED, delivery(1), LEASE, result=RESULT)
    )
    assert settled.outcome is Outcome.LEASE_LOST
    assert recorder.calls == [("mark_completed", None)]


async def test_a_refused_delete_after_the_write_keeps_the_outcome() -> None:
    recorder = Recorder(failures={"delete": [LeaseLost("receipt handle expired")]})
    settled = await settler(recorder).commit(
        Settlement(Outcome.COMPLETED, delivery(1), LEASE, result=RESULT)
    )
    assert settled.outcome is Outcome.COMPLETED  # the redelivery is acknowledged as a duplicate


def test_backoff_grows_with_the_receive_count_inside_its_bounds() -> None:
    rng = random.Random(1)
    for receive_count, (low, high) in {1: (15, 30), 2: (30, 60), 3: (60, 120)}.items():
        samples = [backoff_s(receive_count, 30, 900, rng) for _ in range(200)]
        assert low <= min(samples) and max(samples) <= high
    assert max(backoff_s(20, 30, 900, rng) for _ in range(200)) <= 900


def test_held_delay_waits_out_the_holders_lease() -> None:
    rng = random.Random(1)
    delays = [held_delay_s(600, 1, 300.0, rng) for _ in range(200)]
    assert min(delays) >= 300 + 60 and max(delays) <= 300 + 180
    assert held_delay_s(600, 30, 300.0, rng) <= 43_200 - 600
