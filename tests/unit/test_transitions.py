"""The transition rules, case by case (the stateful test covers their interleavings)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from fakes import job, record_for

from transcoder.domain import transitions as t
from transcoder.domain.job import ErrorInfo, JobMessage, Published, RawKey, Reason, Status
from transcoder.domain.record import JobRecord

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def at(seconds: float) -> t.Clock:
    return t.Clock(T0 + timedelta(seconds=seconds))


def upload(key: str, seq: str, second: float) -> JobMessage:
    ext = key.rsplit(".", 1)[1]
    return JobMessage.for_object(
        bucket="media",
        key=key,
        raw=RawKey("u1", "v1", ext),
        etag=f"e-{key}-{seq}",
        version_id=None,
        trace_id="t",
        sequencer=seq,
        uploaded_at=T0 + timedelta(seconds=second),
    )


def written(decision: t.Decision) -> JobRecord:
    assert isinstance(decision, t.Write), decision
    return decision.record


def test_every_write_bumps_rev_and_is_conditional_on_the_rev_read() -> None:
    first = t.upload_seen(None, job(), at(0), size_bytes=1)
    assert isinstance(first, t.Write) and first.expected_rev is None and first.record.rev == 1
    claim = t.claim(first.record, job(), "w1", 600, at(1))
    assert isinstance(claim, t.Write) and claim.expected_rev == 1 and claim.record.rev == 2
    assert claim.record.write_id != first.record.write_id


def test_a_later_upload_under_another_key_wins_whatever_the_sequencers_say() -> None:
    mp4 = upload("raw/u1/v1.mp4", "FFFF", 0)  # a high sequencer on its own key...
    mov = upload("raw/u1/v1.mov", "0001", 10)  # ...says nothing about another key's events
    record = written(t.upload_seen(None, mp4, at(1), size_bytes=1))
    replaced = written(t.upload_seen(record, mov, at(11), size_bytes=1))
    assert replaced.job_id == mov.job_id
    # The older upload's late notification changes nothing.
    late = t.upload_seen(replaced, mp4, at(12), size_bytes=1)
    assert isinstance(late, t.Refusal) and late.verdict is t.Verdict.STALE


def test_within_one_key_the_sequencer_orders_uploads_not_the_clock() -> None:
    older = upload("raw/u1/v1.mp4", "00A0", 50)  # a skewed event time
    newer = upload("raw/u1/v1.mp4", "00B0", 0)
    assert t.is_newer(t.UploadOrder.of_message(newer), t.UploadOrder.of_message(older))


def test_an_upload_held_behind_a_running_job_takes_over_once_it_ends() -> None:
    first, second = upload("raw/u1/v1.mp4", "01", 0), upload("raw/u1/v1.mp4", "02", 5)
    running = written(
        t.claim(written(t.upload_seen(None, first, at(1), size_bytes=1)), first, "w1", 600, at(2))
    )
    held = t.upload_seen(running, second, at(6), size_bytes=1)
    assert isinstance(held, t.Refusal) and held.verdict is t.Verdict.HELD
    assert t.claim(running, second, "w2", 600, at(7)).__class__ is t.Refusal
    done = written(t.complete(running, t.lease_of(running), Published(renditions={}), at(8)))
    taken = written(t.claim(done, second, "w2", 600, at(9)))
    assert (taken.job_id, taken.attempts, taken.renditions) == (second.job_id, 1, {})
    # `retry` re-sends the job the record describes now, not the first upload's message.
    failed = written(
        t.fail(
            taken, t.lease_of(taken), ErrorInfo(code="stalled", message="x", retryable=True), at(10)
        )
    )
    assert failed.job_message() == second
    assert isinstance(t.retry(failed, None, at(11)), t.Write)


def test_a_completed_record_is_never_taken_back() -> None:
    message = job()
    done = record_for(message, status=Status.COMPLETED)
    for decision in (
        t.claim(done, message, "w9", 600, at(0)),
        t.dead_letter(done, message, at(0)),
        t.upload_deleted(done, message.key, None, at(0)),
        t.retry(done, message.job_id, at(0)),
    ):
        assert isinstance(decision, t.Refusal), decision


def test_a_lease_is_honoured_only_for_its_owner_and_attempt() -> None:
    running = written(t.claim(record_for(job()), job(), "w1", 600, at(0)))
    lease = t.lease_of(running)
    stranger = t.Lease(lease.user_id, lease.video_id, lease.job_id, "w2", lease.attempt)
    earlier = t.Lease(lease.user_id, lease.video_id, lease.job_id, "w1", lease.attempt - 1)
    assert isinstance(t.renew(running, lease, 600, 10, at(1)), t.Write)
    for other in (stranger, earlier):
        refused = t.renew(running, other, 600, 10, at(1))
        assert isinstance(refused, t.Refusal) and refused.verdict is t.Verdict.LEASE_LOST


def test_a_deleted_upload_fails_or_is_fenced_at_publish() -> None:
    message = job()
    queued = record_for(message)
    gone = written(t.upload_deleted(queued, message.key, None, at(0)))
    assert (gone.status, gone.error and gone.error.code) == (Status.FAILED, Reason.SOURCE_DELETED)
    running = written(t.claim(queued, message, "w1", 600, at(0)))
    flagged = written(t.upload_deleted(running, message.key, None, at(1)))
    fence = t.confirm(flagged, t.lease_of(flagged), at(2))
    assert isinstance(fence, t.Refusal) and fence.verdict is t.Verdict.SOURCE_DELETED


def test_dead_letters_mark_the_job_or_wait_for_an_earlier_running_upload() -> None:
    first, second = upload("raw/u1/v1.mp4", "01", 0), upload("raw/u1/v1.mp4", "02", 5)
    running = written(
        t.claim(written(t.upload_seen(None, first, at(0), size_bytes=1)), first, "w1", 600, at(1))
    )
    wait = t.dead_letter(running, second, at(2))
    assert isinstance(wait, t.Refusal) and wait.verdict is t.Verdict.WAIT
    lapsed = running.model_copy(update={"lease_expires_at": at(1).epoch_s})
    adopted = written(t.dead_letter(lapsed, second, at(700)))
    assert (adopted.job_id, adopted.status) == (second.job_id, Status.FAILED)
    assert adopted.error is not None and adopted.error.code == Reason.RETRIES_EXHAUSTED
    assert adopted.job_message() == second  # `transcoder retry` can run it
