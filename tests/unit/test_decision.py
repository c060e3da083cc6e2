"""The one decision: each case of what a delivery met maps to exactly one typed outcome."""

from __future__ import annotations

import random

import pytest
from fakes import job

from transcoder.domain.job import ErrorInfo, PartsRecord, PartState, Published, Reason
from transcoder.domain.transitions import Lease, Refusal, Verdict
from transcoder.runtime import decision as d

LEASE = Lease("u1", "v1", job().job_id, "w1", 1)
POLICY = d.RetryPolicy(3, 600, 30, 900, 5, 120)
PERMANENT = ErrorInfo(code=Reason.NOT_A_VIDEO, message="x", retryable=False)
RETRYABLE = ErrorInfo(code=Reason.STALLED, message="x", retryable=True)
AWS_DOWN = ErrorInfo(code=Reason.AWS_UNAVAILABLE, message="503", retryable=True)
AWS_REFUSED = ErrorInfo(code=Reason.AWS_ERROR, message="AccessDenied", retryable=True)
SCRATCH_FULL = ErrorInfo(code=Reason.SCRATCH_FULL, message="0 bytes free", retryable=True)


def decide(facts: d.Facts, receive_count: int = 1) -> d.Outcome:
    return d.decide(facts, receive_count, POLICY, random.Random(3))


@pytest.mark.parametrize(
    ("facts", "receive_count", "kind", "label"),
    [
        (d.Succeeded(LEASE, Published(renditions={})), 1, d.Completed, d.Label.COMPLETED),
        (d.Errored(LEASE, PERMANENT), 1, d.Failed, d.Label.FAILED),
        (d.Errored(LEASE, RETRYABLE), 1, d.Retry, d.Label.RETRY),
        (d.Errored(LEASE, RETRYABLE), 3, d.Failed, d.Label.EXHAUSTED),
        (d.Interrupted(LEASE), 1, d.HandedBack, d.Label.HANDED_BACK),
        (d.EnvironmentFailed(LEASE, SCRATCH_FULL), 1, d.HandedBack, d.Label.WORKER_UNFIT),
        (d.EnvironmentFailed(LEASE, SCRATCH_FULL), 3, d.HandedBack, d.Label.WORKER_UNFIT),
        (d.LostLease(RETRYABLE), 1, d.LeaseLost, d.Label.LEASE_LOST),
        (d.NotClaimed(Refusal(Verdict.DUPLICATE, "")), 1, d.Acknowledge, d.Label.DUPLICATE),
        (d.NotClaimed(Refusal(Verdict.ALREADY_FAILED, "")), 1, d.Acknowledge, d.Label.DUPLICATE),
        (d.NotClaimed(Refusal(Verdict.STALE, "")), 1, d.Acknowledge, d.Label.SUPERSEDED),
        (d.NotClaimed(Refusal(Verdict.HELD, "", 100)), 1, d.GiveBack, d.Label.HELD),
        (d.TableUnreachable(AWS_DOWN), 1, d.GiveBack, d.Label.DEFERRED),
        (d.TableUnreachable(AWS_REFUSED), 1, d.Backoff, d.Label.DEFERRED),
        (d.Crashed(RETRYABLE), 1, d.Backoff, d.Label.DEFERRED),
        (d.FromNewerProducer(2), 1, d.GiveBack, d.Label.POSTPONED),
        (d.NotAJob(PERMANENT), 1, d.Poison, d.Label.POISON),
    ],
)
def test_each_case_has_one_outcome(
    facts: d.Facts, receive_count: int, kind: type, label: d.Label
) -> None:
    outcome = decide(facts, receive_count)
    assert isinstance(outcome, kind)
    assert outcome.label is label


def test_exhausted_names_the_last_cause_and_leaves_the_message_for_the_dlq() -> None:
    outcome = decide(d.Errored(LEASE, RETRYABLE), receive_count=3)
    assert isinstance(outcome, d.Failed) and outcome.to_dlq
    assert outcome.error.code == Reason.RETRIES_EXHAUSTED
    assert "stalled" in outcome.error.message


def test_give_backs_on_the_last_receive_are_resent_not_spent() -> None:
    for facts in (
        d.Interrupted(LEASE),
        d.EnvironmentFailed(LEASE, SCRATCH_FULL),
        d.NotClaimed(Refusal(Verdict.HELD, "", 10)),
        d.TableUnreachable(AWS_DOWN),
        d.FromNewerProducer(9),
    ):
        assert getattr(decide(facts, receive_count=3), "resend", None) is True, facts
        assert getattr(decide(facts, receive_count=1), "resend", None) is False, facts


def test_a_newer_producers_message_is_never_failed_or_poisoned() -> None:
    for count in (1, 2, 3, 10):
        assert not isinstance(decide(d.FromNewerProducer(2), count), d.Failed | d.Poison)


def test_a_sick_workers_failure_hands_the_job_back_with_its_cause() -> None:
    outcome = decide(d.EnvironmentFailed(LEASE, SCRATCH_FULL), receive_count=3)
    assert outcome == d.HandedBack(
        LEASE, resend=True, error=SCRATCH_FULL, label=d.Label.WORKER_UNFIT
    )


PART = Lease("u1", "v1", job().job_id, "w1", 1, part=2)


def test_a_part_handed_back_on_shutdown_keeps_its_receives() -> None:
    """A chunk interrupted by SIGTERM (a Spot notice) is re-sent, not made visible: two
    interruptions must not leave it one crash away from the DLQ. A whole job only on its last."""
    assert decide(d.Interrupted(PART), 1) == d.HandedBack(PART, resend=True)
    assert decide(d.Interrupted(LEASE), 1) == d.HandedBack(LEASE, resend=False)
    assert decide(d.Interrupted(LEASE), 3) == d.HandedBack(LEASE, resend=True)


def test_a_split_fans_out_and_a_finished_part_is_acknowledged() -> None:
    plan = PartsRecord(
        rate="25/1", keyint=50, expected_frames=100, starts=(0,), audio=False, states=(PartState(),)
    )
    message = job()
    assert decide(d.SplitPlanned(LEASE, message, plan)) == d.FanOut(LEASE, message, plan)
    assert decide(d.PartFinished(PART)) == d.Acknowledge(d.Label.PART_DONE)
