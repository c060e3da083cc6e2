"""The chunked job's transitions (issue 15), case by case: split, parts, stitch, failure."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from fakes import job, record_for

from transcoder.domain import transitions as t
from transcoder.domain.job import (
    ErrorInfo,
    JobMessage,
    PartKind,
    PartsRecord,
    PartState,
    PartStatus,
    Published,
    RawKey,
    Reason,
    Status,
)
from transcoder.domain.record import JobRecord, from_item, to_item

T0 = datetime(2026, 1, 1, tzinfo=UTC)
ERROR = ErrorInfo(code=Reason.FFMPEG_FAILED, message="exit 1", retryable=True)


def at(seconds: float) -> t.Clock:
    return t.Clock(T0 + timedelta(seconds=seconds))


def written(decision: t.Decision) -> JobRecord:
    assert isinstance(decision, t.Write), decision
    return decision.record


def refused(decision: t.Decision) -> t.Verdict:
    assert isinstance(decision, t.Refusal), decision
    return decision.verdict


def plan(chunks: int = 3, audio: bool = True) -> PartsRecord:
    return PartsRecord(
        rate="30/1",
        keyint=60,
        expected_frames=chunks * 180,
        starts=tuple(i * 180 for i in range(chunks)),
        audio=audio,
        states=tuple(PartState() for _ in range(chunks + (1 if audio else 0))),
    )


def fanned(message: JobMessage | None = None) -> tuple[JobRecord, JobMessage]:
    """A job claimed, split into three chunks and the audio, and fanned out."""
    message = message or job()
    record = written(t.claim(record_for(message), message, "splitter", 600, at(0)))
    lease = t.lease_of(record)
    record = written(t.split(record, lease, plan(), at(1)))
    return written(t.fanned_out(record, lease, at(2))), message


def part_message(record: JobRecord, message: JobMessage, index: int) -> JobMessage:
    assert record.parts is not None
    return message.for_part(record.parts.part(index))


def claimed(record: JobRecord, message: JobMessage, index: int, owner: str, s: float) -> JobRecord:
    return written(t.claim(record, part_message(record, message, index), owner, 60, at(s)))


def test_a_split_job_hands_its_lease_to_its_parts() -> None:
    record, message = fanned()
    assert record.status is Status.PROCESSING and record.lease_owner is None
    assert record.parts is not None and record.parts.sent
    assert not record.lease_live(at(3).epoch_s)  # chunks hold nothing a newer upload waits for
    # The job's own message again (a duplicate notification): acknowledged, never re-split.
    assert refused(t.claim(record, message, "w9", 600, at(3))) is t.Verdict.DUPLICATE


def test_a_redelivered_job_message_keeps_the_plan_it_recorded() -> None:
    message = job()
    record = written(t.claim(record_for(message), message, "first", 600, at(0)))
    record = written(t.split(record, t.lease_of(record), plan(3), at(1)))
    # The splitter died before fanning out: its lease lapses, the message comes back.
    again = written(t.claim(record, message, "second", 600, at(700)))
    resplit = written(t.split(again, t.lease_of(again), plan(5), at(701)))
    assert resplit.parts == record.parts


def test_part_messages_are_version_2_and_name_their_part() -> None:
    record, message = fanned()
    part = part_message(record, message, 1)
    assert part.version == 2 and part.part is not None
    assert (part.part.kind, part.part.start_frame, part.part.end_frame) == (
        PartKind.CHUNK,
        180,
        360,
    )
    assert part.part.label == "chunk 2 of 3"
    assert part_message(record, message, 3).part.label == "the audio part"  # type: ignore[union-attr]
    assert part_message(record, message, 2).part.end_frame is None  # type: ignore[union-attr]
    assert JobMessage.model_validate_json(part.model_dump_json()) == part
    assert part.whole() == message


def test_each_part_has_its_own_lease_and_attempts() -> None:
    record, message = fanned()
    record = claimed(record, message, 0, "a", 10)
    record = claimed(record, message, 1, "b", 10)
    assert record.parts is not None
    assert [s.owner for s in record.parts.states] == ["a", "b", None, None]
    # A second delivery of part 0 waits for its live lease, then takes it over as attempt 2.
    assert refused(t.claim(record, part_message(record, message, 0), "c", 60, at(20))) is (
        t.Verdict.HELD
    )
    taken = claimed(record, message, 0, "c", 80)
    assert taken.parts is not None and taken.parts.states[0].attempts == 2
    stale = t.lease_of(record, 0)
    assert refused(t.renew(taken, stale, 60, 50, at(81))) is t.Verdict.LEASE_LOST
    # Part 1's lease is untouched by part 0's takeover.
    renewed = written(t.renew(taken, t.lease_of(record, 1), 60, 50, at(82)))
    assert renewed.parts is not None and renewed.parts.states[1].progress == 50
    assert renewed.progress == 100 * 0 + 50 * 180 // (3 * 180 + 10)  # weighted by frames


def test_the_last_part_done_is_the_stitcher_exactly_once() -> None:
    record, message = fanned()
    for index in range(4):
        record = claimed(record, message, index, f"w{index}", 10)
    for index in (2, 0, 3):
        record = written(t.part_done(record, t.lease_of(record, index), at(20)))
        assert record.parts is not None and record.parts.stitcher is None
    last = written(t.part_done(record, t.lease_of(record, 1), at(21)))
    assert last.parts is not None and last.parts.stitcher == 1 and last.progress == 99
    assert last.lease_live(at(22).epoch_s)  # the stitch holds the job
    # Only the stitcher completes the job; a done part's lease cannot.
    assert refused(t.complete(last, t.lease_of(last, 0), Published(renditions={}), at(23))) is (
        t.Verdict.LEASE_LOST
    )
    done = written(t.complete(last, t.lease_of(last, 1), Published(renditions={}), at(23)))
    assert done.status is Status.COMPLETED and done.progress == 100
    assert refused(t.claim(done, part_message(done, message, 2), "w", 60, at(24))) is (
        t.Verdict.DUPLICATE
    )


def test_a_dead_stitcher_is_replaced_through_its_own_message() -> None:
    record, message = fanned()
    for index in range(4):
        record = claimed(record, message, index, f"w{index}", 10)
        record = written(t.part_done(record, t.lease_of(record, index), at(11)))
    assert record.parts is not None and record.parts.stitcher == 3
    # Another part's duplicate delivery is dropped; the stitcher's message, once its lease
    # lapsed, is claimed to stitch only.
    assert refused(t.claim(record, part_message(record, message, 0), "x", 60, at(100))) is (
        t.Verdict.DUPLICATE
    )
    again = written(t.claim(record, part_message(record, message, 3), "x", 60, at(100)))
    lease = t.lease_of(again, 3)
    assert lease.stitch_only and lease.attempt == 2
    assert written(t.complete(again, lease, Published(renditions={}), at(101))).status is (
        Status.COMPLETED
    )


def test_a_part_handed_back_is_queued_alone() -> None:
    record, message = fanned()
    record = claimed(record, message, 0, "a", 10)
    record = claimed(record, message, 1, "b", 10)
    back = written(t.hand_back(record, t.lease_of(record, 0), ERROR, at(12)))
    assert back.status is Status.PROCESSING and back.parts is not None
    assert back.parts.states[0].status is PartStatus.QUEUED and back.parts.states[0].error == ERROR
    assert back.parts.states[1].status is PartStatus.PROCESSING


def test_a_failed_part_fails_the_job_naming_the_part() -> None:
    record, message = fanned()
    record = claimed(record, message, 1, "a", 10)
    bad = ErrorInfo(code=Reason.UNDECODABLE, message="broken frames", retryable=False)
    failed = written(t.fail(record, t.lease_of(record, 1), bad, at(11)))
    assert failed.status is Status.FAILED and failed.error is not None
    assert failed.error.message == "chunk 2 of 3: broken frames"
    # Every other part's message is dropped from now on.
    assert refused(t.claim(failed, part_message(failed, message, 0), "b", 60, at(12))) is (
        t.Verdict.ALREADY_FAILED
    )


def test_a_dead_lettered_part_fails_the_job_with_its_last_cause() -> None:
    record, message = fanned()
    record = claimed(record, message, 2, "a", 10)
    record = written(t.hand_back(record, t.lease_of(record, 2), ERROR, at(11)))
    letter = part_message(record, message, 2)
    failed = written(t.dead_letter(record, letter, at(12)))
    assert failed.status is Status.FAILED and failed.error is not None
    assert failed.error.code == Reason.RETRIES_EXHAUSTED and failed.error.retryable
    assert failed.error.message == (
        "chunk 3 of 3 dead-lettered after 1 attempt(s); last cause: ffmpeg_failed: exit 1"
    )
    assert refused(t.dead_letter(failed, letter, at(13))) is t.Verdict.SKIP
    # Retried by an operator: the job starts over from its own message, planned afresh.
    queued = written(t.retry(failed, failed.job_id, at(14)))
    assert queued.status is Status.QUEUED and queued.parts is None
    assert queued.job_message() == message
    assert refused(t.claim(queued, letter, "b", 60, at(15))) is t.Verdict.DUPLICATE


def test_a_running_part_is_not_dead_lettered_under_its_lease() -> None:
    record, message = fanned()
    record = claimed(record, message, 0, "a", 10)
    assert refused(t.dead_letter(record, part_message(record, message, 0), at(11))) is (
        t.Verdict.WAIT
    )


def test_a_newer_upload_supersedes_every_part() -> None:
    record, message = fanned()
    record = claimed(record, message, 0, "a", 10)
    newer = JobMessage.for_object(
        bucket=message.bucket,
        key=message.key,
        raw=RawKey(message.user_id, message.video_id, "mp4"),
        etag="newer",
        version_id=None,
        trace_id="t2",
        uploaded_at=datetime.now(UTC) + timedelta(hours=1),
    )
    replaced = written(t.upload_seen(record, newer, at(31), size_bytes=1))
    assert replaced.job_id == newer.job_id and replaced.parts is None
    assert refused(t.renew(replaced, t.lease_of(record, 0), 60, 10, at(32))) is (
        t.Verdict.LEASE_LOST
    )
    assert refused(t.claim(replaced, part_message(record, message, 1), "b", 60, at(33))) is (
        t.Verdict.STALE
    )


@pytest.mark.parametrize("audio", [True, False])
def test_the_parts_record_survives_dynamodb(audio: bool) -> None:
    message = job()
    record = written(t.claim(record_for(message), message, "s", 600, at(0)))
    record = written(t.split(record, t.lease_of(record), plan(2, audio), at(1)))
    record = claimed(record, message, 1, "a", 10)
    assert from_item(to_item(record)) == record
    assert record.parts is not None and len(record.parts.states) == (3 if audio else 2)
