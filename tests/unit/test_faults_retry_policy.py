"""The retry policy and settling under faults, with typed fakes (no AWS, no ffmpeg).

* give-backs that are not the job's fault never spend the last allowed receive;
* a transient failure while settling resumes at the step that failed, never re-running a fenced
  write that already happened;
* backoff grows with the receive count, with jitter, inside its bounds.
"""

from __future__ import annotations

import random
import time

import pytest
from fakes import POLICY, FakeClock, FakeQueue, FakeStore, delivery, job, record_for
from prometheus_client import REGISTRY

from transcoder.domain.errors import AwsUnavailable, LeaseLost
from transcoder.domain.job import (
    ErrorInfo,
    Published,
    Reason,
    RenditionRecord,
    RenditionStatus,
    Status,
)
from transcoder.domain.transitions import Lease, Refusal, Verdict
from transcoder.runtime import decision
from transcoder.runtime.decision import Label, RetryPolicy
from transcoder.runtime.settlement import Settler

LEASE = Lease("u1", "v1", job().job_id, "w1", 1)
RENDITIONS = {"720p": RenditionRecord(status=RenditionStatus.COMPLETED, key="k")}
AWS_DOWN = ErrorInfo(code=Reason.AWS_UNAVAILABLE, message="503", retryable=True)
CRASH = ErrorInfo(code=Reason.INTERNAL_ERROR, message="bug", retryable=True)


def settler(queue: FakeQueue, store: FakeStore) -> Settler:
    return Settler(queue, store, sleep=FakeClock().sleep)


def claimed_store(**kwargs: object) -> FakeStore:
    """A store holding ``LEASE``'s job, claimed and running."""
    store = FakeStore(**kwargs)  # type: ignore[arg-type]
    store.put(
        record_for(
            job(),
            status=Status.PROCESSING,
            lease_owner=LEASE.owner,
            attempts=LEASE.attempt,
            lease_expires_at=time.time() + 600,
        )
    )
    return store


def held(remaining_s: float = 0.0) -> decision.Facts:
    return decision.NotClaimed(Refusal(Verdict.HELD, "held", remaining_s))


@pytest.mark.parametrize(
    ("facts", "receive_count", "expected"),
    [
        (decision.Interrupted(LEASE), 2, [("visibility", 0)]),
        (decision.Interrupted(LEASE), 3, [("requeue", 0)]),
        (decision.TableUnreachable(AWS_DOWN), 3, [("requeue", None)]),
        (held(40), 3, [("requeue", None)]),
        (decision.FromNewerProducer(2), 3, [("requeue", decision.POSTPONE_S)]),
        # a crash may be the job's fault: it spends the receive like any failure
        (decision.Crashed(CRASH), 3, [("visibility", None)]),
    ],
)
async def test_give_backs_never_spend_the_last_receive(
    facts: decision.Facts, receive_count: int, expected: list[tuple[str, int | None]]
) -> None:
    queue, store = FakeQueue(), claimed_store()
    outcome = decision.decide(facts, receive_count, POLICY, random.Random(1))
    await settler(queue, store).commit(outcome, delivery("{}", receive_count))
    got = [
        (name, value if want is not None else None)
        for (name, value), (_, want) in zip(queue.calls, expected, strict=True)
    ]
    assert got == expected


def retries(cause: str, outcome: str) -> float:
    sample = REGISTRY.get_sample_value(
        "transcoder_retries_total", {"cause": cause, "outcome": outcome}
    )
    return sample or 0.0


@pytest.mark.parametrize(
    ("facts", "cause", "outcome"),
    [
        (decision.Errored(LEASE, AWS_DOWN), "aws_unavailable", "retry"),
        (decision.TableUnreachable(AWS_DOWN), "aws_unavailable", "deferred"),
        (held(40), "held", "held"),
        (decision.Crashed(CRASH), "internal_error", "deferred"),
    ],
)
async def test_retries_are_counted_by_cause(
    facts: decision.Facts, cause: str, outcome: str
) -> None:
    """A brownout reads as aws_unavailable retries, not as anonymous retries or bugs."""
    before = retries(cause, outcome)
    decided = decision.decide(facts, 1, POLICY, random.Random(1))
    await settler(FakeQueue(), claimed_store()).commit(decided, delivery("{}", 1))
    assert retries(cause, outcome) == before + 1


async def test_a_retry_refused_for_a_lost_lease_is_not_counted_as_its_cause() -> None:
    store = claimed_store()
    store.put(record_for(job(), status=Status.PROCESSING, lease_owner="w2", attempts=2))
    before = retries("aws_unavailable", "retry")
    outcome = decision.Retry(LEASE, AWS_DOWN, 5)
    settled = await settler(FakeQueue(), store).commit(outcome, delivery("{}", 1))
    assert settled.label is Label.LEASE_LOST
    assert retries("aws_unavailable", "retry") == before


async def test_a_retry_resumes_at_the_step_that_failed() -> None:
    queue, store = FakeQueue(failures={"delete": [AwsUnavailable("503")]}), claimed_store()
    outcome = decision.Completed(LEASE, Published(renditions=RENDITIONS))
    settled = await settler(queue, store).commit(outcome, delivery("{}"))
    assert settled.label is Label.COMPLETED
    assert store.calls == [("mark_completed", ["720p"])]  # the fenced write ran once
    assert queue.calls == [("delete", "m1"), ("delete", "m1")]


async def test_a_refused_fenced_write_becomes_lease_lost_and_touches_nothing() -> None:
    queue, store = FakeQueue(), claimed_store(lose_lease_on="mark_completed")
    outcome = decision.Completed(LEASE, Published(renditions=RENDITIONS))
    settled = await settler(queue, store).commit(outcome, delivery("{}"))
    assert settled.label is Label.LEASE_LOST
    assert isinstance(settled.outcome, decision.LeaseLost)
    assert settled.outcome.error.code == Reason.LEASE_LOST
    assert queue.calls == []


async def test_a_refused_delete_after_the_write_keeps_the_outcome() -> None:
    queue = FakeQueue(failures={"delete": [LeaseLost("receipt handle expired")]})
    outcome = decision.Completed(LEASE, Published(renditions=RENDITIONS))
    settled = await settler(queue, claimed_store()).commit(outcome, delivery("{}"))
    assert settled.label is Label.COMPLETED  # the redelivery is acknowledged as a duplicate


def test_backoff_grows_with_the_receive_count_inside_its_bounds() -> None:
    rng = random.Random(1)
    for receive_count, (low, high) in {1: (15, 30), 2: (30, 60), 3: (60, 120)}.items():
        samples = [POLICY.backoff_s(receive_count, 30, 900, rng) for _ in range(200)]
        assert low <= min(samples) and max(samples) <= high
    assert max(POLICY.backoff_s(20, 30, 900, rng) for _ in range(200)) <= 900


def test_held_delay_waits_out_the_holders_lease() -> None:
    rng = random.Random(1)
    delays = [POLICY.held_delay_s(1, 300.0, rng) for _ in range(200)]
    assert min(delays) >= 300 + 60 and max(delays) <= 300 + 180
    assert POLICY.held_delay_s(30, 300.0, rng) <= 43_200 - 600


def test_the_jitter_floor_comes_from_the_policy() -> None:
    steady = RetryPolicy(3, 600, 30, 900, 5, 120, jitter_min=1.0)
    assert {steady.backoff_s(2, 30, 900, random.Random(seed)) for seed in range(20)} == {60}
