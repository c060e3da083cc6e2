"""The job's state machine under random interleavings of every actor (hypothesis, stateful).

Actors: the enqueue Lambda (uploads of one video under two keys, notifications that arrive late,
twice, or out of order; deletions), two workers (receive, claim, renew, complete, fail, hand back,
crash), the dead-letter handler, an operator's retry, and time. The table is a single record
written only under its ``rev`` condition; actors may decide on a stale read (the write is then
refused and decided again, as the adapters do). The queue applies ``runtime.decision`` to what
each delivery met, so the worker's one decision is exercised too.

Chunked jobs (issue 15): a worker that claimed a job's own message may find it long and split
it (``FanOut``: the plan recorded, one message per part sent, the job's lease released; the ack
may be lost before the release, so the job's message comes back and sends them again); parts are
received, claimed, renewed, finished, failed, handed back and crashed like jobs; the part whose
completion was the last becomes the stitcher and completes the job on its next step; a dead
stitcher's message is claimed again to stitch only.

Invariants, after every step: a ``COMPLETED`` record is never overwritten by an older attempt or
an older upload; at most one worker holds a lease that the record honours, per part (or for the
job itself). At the end, once every actor has drained its work: the newest accepted upload owns
the record, and it is ``COMPLETED`` or ``FAILED`` with a reason.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from transcoder.domain import transitions as t
from transcoder.domain.job import (
    ErrorInfo,
    JobMessage,
    PartsRecord,
    PartState,
    PartStatus,
    Published,
    RawKey,
    Reason,
    Status,
)
from transcoder.domain.record import JobRecord
from transcoder.runtime import decision as d

Decide = Callable[[JobRecord | None], t.Decision]
KEYS = ("raw/u/v.mp4", "raw/u/v.mov")
POLICY = d.RetryPolicy(3, 600, 30, 900, 5, 120)
LEASE_S = 600.0
START = datetime(2026, 1, 1, tzinfo=UTC)
PLAN = PartsRecord(  # two chunks and the audio
    rate="25/1",
    keyint=50,
    expected_frames=300,
    starts=(0, 150),
    audio=True,
    states=(PartState(), PartState(), PartState()),
)


@dataclass
class Upload:
    message: JobMessage
    deleted: bool = False


@dataclass
class Message:
    body: JobMessage
    receives: int = 0
    visible_at: float = 0.0


@dataclass
class Worker:
    name: str
    lease: t.Lease | None = None
    message: Message | None = None
    seen: JobRecord | None = None  # the record as this worker last read or wrote it
    stitching: bool = False  # its part was the last one done: its next finish publishes


@dataclass
class World:
    now: float = 0.0
    record: JobRecord | None = None
    uploads: list[Upload] = field(default_factory=list)
    events: list[tuple[str, Upload]] = field(default_factory=list)  # ("created"|"removed", u)
    queue: list[Message] = field(default_factory=list)
    dlq: list[Message] = field(default_factory=list)
    sequencers: dict[str, int] = field(default_factory=dict)
    accepted: list[Upload] = field(default_factory=list)
    notified: list[Upload] = field(default_factory=list)  # their created event was handled

    def clock(self) -> t.Clock:
        return t.Clock(START + timedelta(seconds=self.now))

    def store(self, decision: t.Decision, read: JobRecord | None) -> JobRecord | t.Refusal | None:
        """The conditional put: stored only if the record's rev is still the one read."""
        if isinstance(decision, t.Refusal):
            return decision
        current_rev = self.record.rev if self.record is not None else None
        if decision.expected_rev != current_rev:
            return None  # refused: the caller re-reads and decides again
        check_overwrite(self.record, decision.record)
        self.record = decision.record
        return decision.record

    def transact(self, decide: Decide, read: JobRecord | None = None) -> JobRecord | t.Refusal:
        """Decide on ``read`` (possibly stale); when refused, re-read and decide again."""
        outcome = self.store(decide(read), read)
        while outcome is None:
            outcome = self.store(decide(self.record), self.record)
        return outcome


def check_overwrite(before: JobRecord | None, after: JobRecord) -> None:
    if before is None or before.status is not Status.COMPLETED:
        return
    if after.job_id == before.job_id:
        assert after.status is Status.COMPLETED, f"completed job rewritten as {after.status}"
        assert after.renditions == before.renditions
    else:
        newer = t.is_newer(t.UploadOrder.of_record(after), t.UploadOrder.of_record(before))
        assert newer, "a completed record was replaced by an older upload"


class JobLife(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.world = World()
        self.workers = [Worker("w1"), Worker("w2")]
        self.rng = random.Random(0)
        self.lose_ack = False

    # ------------------------------------------------------------------ the Lambda

    @initialize(key=st.sampled_from(KEYS))
    def first_upload(self, key: str) -> None:
        """Every run starts with one upload recorded and its message queued."""
        self.upload(key, same_bytes=False)
        self.deliver(*self.world.events.pop(0))

    @rule(key=st.sampled_from(KEYS), same_bytes=st.booleans())
    def upload(self, key: str, same_bytes: bool) -> None:
        w = self.world
        w.now += 1
        seq = w.sequencers.get(key, 0) + 1
        w.sequencers[key] = seq
        message = JobMessage.for_object(
            bucket="media",
            key=key,
            raw=RawKey("u", "v", key.rsplit(".", 1)[1]),
            etag="same" if same_bytes else f"e{len(w.uploads)}",
            version_id=None,
            trace_id="t",
            sequencer=f"{seq:04X}",
            uploaded_at=w.clock().now,
        )
        upload = Upload(message)
        w.uploads.append(upload)
        w.events.append(("created", upload))

    @rule(data=st.data())
    @precondition(lambda self: bool(self.world.events))
    def notify(self, data: st.DataObject) -> None:
        """S3 delivers a pending notification: any of them (out of order), maybe twice."""
        w = self.world
        index = data.draw(st.integers(0, len(w.events) - 1))
        kind, upload = w.events[index]
        if not data.draw(st.booleans()):  # delivered again later as well
            w.events.pop(index)
        self.deliver(kind, upload)

    def deliver(self, kind: str, upload: Upload) -> None:
        w = self.world
        if kind == "removed":
            key, seq = upload.message.key, upload.message.source_sequencer
            w.transact(lambda r: t.upload_deleted(r, key, seq, w.clock()), w.record)
            return
        outcome = w.transact(
            lambda r: t.upload_seen(r, upload.message, w.clock(), size_bytes=1), w.record
        )
        if upload not in w.notified:
            w.notified.append(upload)
        if isinstance(outcome, JobRecord) or outcome.verdict in (t.Verdict.HELD, t.Verdict.RESEND):
            if upload not in w.accepted:  # recorded, or its message sent to wait its turn
                w.accepted.append(upload)
            w.queue.append(Message(upload.message, visible_at=w.now))
            job_id = upload.message.job_id
            w.transact(lambda r: t.enqueued(r, job_id, "m", w.clock()), w.record)

    @rule()
    @precondition(lambda self: bool(self.world.uploads))
    def delete_latest(self) -> None:
        upload = self.world.uploads[-1]
        if not upload.deleted:
            upload.deleted = True
            self.world.now += 1
            self.world.events.append(("removed", upload))

    # ------------------------------------------------------------------ the workers

    @rule(which=st.integers(0, 1), pick=st.integers(0, 3))
    def receive(self, which: int, pick: int = 0) -> None:
        """SQS hands out any visible message (not in order: a part may overtake its job)."""
        worker, w = self.workers[which], self.world
        visible = [m for m in w.queue if m.visible_at <= w.now]
        if worker.message is not None or not visible:
            return
        message = visible[pick % len(visible)]
        if message.receives >= POLICY.max_receive_count:  # SQS's redrive policy
            w.queue.remove(message)
            w.dlq.append(message)
            return
        message.receives += 1
        message.visible_at = w.now + LEASE_S
        worker.message = message
        claimed = w.transact(
            lambda r: t.claim(r, message.body, worker.name, LEASE_S, w.clock()), w.record
        )
        if isinstance(claimed, t.Refusal):
            self.settle(worker, d.NotClaimed(claimed))
        else:
            part = message.body.part.index if message.body.part else None
            worker.lease, worker.seen = t.lease_of(claimed, part), claimed
            worker.stitching = worker.lease.stitch_only

    @rule(which=st.integers(0, 1), stale=st.booleans())
    @precondition(lambda self: any(x.lease for x in self.workers))
    def renew(self, which: int, stale: bool) -> None:
        worker, w = self.workers[which], self.world
        lease = worker.lease
        if lease is None:
            return
        read = worker.seen if stale else w.record
        outcome = w.transact(lambda r: t.renew(r, lease, LEASE_S, 50, w.clock()), read)
        if isinstance(outcome, t.Refusal):
            self.settle(worker, d.LostLease(d.error_info(Exception(outcome.reason))))
        else:
            worker.seen = outcome
            assert worker.message is not None
            worker.message.visible_at = w.now + LEASE_S

    @rule(
        which=st.integers(0, 1),
        result=st.sampled_from(["ok", "retryable", "permanent", "split"]),
    )
    @precondition(lambda self: any(x.lease for x in self.workers))
    def finish(self, which: int, result: str) -> None:
        worker = self.workers[which]
        lease = worker.lease
        if lease is None:
            return
        if result == "split" and lease.part is None:
            assert worker.message is not None
            self.settle(worker, d.SplitPlanned(lease, worker.message.body, PLAN))
        elif result in ("ok", "split"):
            self.publish(worker)
        else:
            code = Reason.STALLED if result == "retryable" else Reason.NOT_A_VIDEO
            error = ErrorInfo(code=code, message=result, retryable=result == "retryable")
            self.settle(worker, d.Errored(lease, error))

    @rule(which=st.integers(0, 1), crash=st.booleans())
    @precondition(lambda self: any(x.lease for x in self.workers))
    def stop(self, which: int, crash: bool) -> None:
        """SIGTERM (hand back) or SIGKILL (the worker vanishes; its lease runs out)."""
        worker = self.workers[which]
        if worker.lease is None:
            return
        if crash:
            worker.lease = worker.message = worker.seen = None
        else:
            self.settle(worker, d.Interrupted(worker.lease))

    def publish(self, worker: Worker) -> None:
        """The publish fence (confirm), then success; a deleted upload fails permanently."""
        w, lease = self.world, worker.lease
        assert lease is not None
        fence = w.transact(lambda r: t.confirm(r, lease, w.clock()), w.record)
        upload = next(u for u in w.uploads if u.message.job_id == lease.job_id)
        if isinstance(fence, JobRecord) and upload.deleted:  # the worker's HEAD finds it gone
            error = ErrorInfo(code=Reason.SOURCE_DELETED, message="deleted", retryable=False)
            self.settle(worker, d.Errored(lease, error))
        elif isinstance(fence, JobRecord) and lease.part is not None and not worker.stitching:
            self.part_done(worker, lease)
        elif isinstance(fence, JobRecord):
            self.settle(worker, d.Succeeded(lease, Published(renditions={})))
        elif fence.verdict is t.Verdict.SOURCE_DELETED:
            error = ErrorInfo(code=Reason.SOURCE_DELETED, message="deleted", retryable=False)
            self.settle(worker, d.Errored(lease, error))
        else:
            self.settle(worker, d.LostLease(d.error_info(Exception(fence.reason))))

    def part_done(self, worker: Worker, lease: t.Lease) -> None:
        """A part's outputs are uploaded: recorded done; the last one done goes on to stitch."""
        w = self.world
        done = w.transact(lambda r: t.part_done(r, lease, w.clock()), w.record)
        if isinstance(done, t.Refusal):
            self.settle(worker, d.LostLease(d.error_info(Exception(done.reason))))
        elif done.parts is not None and done.parts.stitcher == lease.part:
            worker.stitching, worker.seen = True, done  # stitches under the same lease
        else:
            self.settle(worker, d.PartFinished(lease))

    @rule()
    @precondition(lambda self: bool(self.world.queue))
    def duplicate_delivery(self) -> None:
        """SQS delivers at least once: a copy of a message appears."""
        original = self.world.queue[0]
        self.world.queue.append(Message(original.body, visible_at=self.world.now))

    @rule(lose=st.booleans())
    def lose_next_ack(self, lose: bool) -> None:
        """The next queue action after a record write is lost (the message comes back)."""
        self.lose_ack = lose

    # -------------------------------------------------------- time, DLQ, operators

    @rule(seconds=st.sampled_from([10.0, 300.0, 700.0]))
    def tick(self, seconds: float) -> None:
        self.world.now += seconds

    @rule()
    @precondition(lambda self: bool(self.world.dlq))
    def dead_letter_handler(self) -> None:
        w = self.world
        letter = w.dlq[0]
        outcome = w.transact(lambda r: t.dead_letter(r, letter.body, w.clock()), w.record)
        if not (isinstance(outcome, t.Refusal) and outcome.verdict is t.Verdict.WAIT):
            w.dlq.pop(0)

    @rule()
    def operator_retry(self) -> None:
        w = self.world
        current = w.record
        if current is None or t.retry(current, None, w.clock()).__class__ is t.Refusal:
            return
        message = current.job_message()
        assert message is not None
        w.queue.append(Message(message, visible_at=w.now))
        w.transact(lambda r: t.retry(r, message.job_id, w.clock()), current)

    # ------------------------------------------------------------- the decision

    def settle(self, worker: Worker, facts: d.Facts) -> None:
        """``decide`` once, then execute it against the table and the queue (as the settler)."""
        w, message = self.world, worker.message
        assert message is not None
        outcome = d.decide(facts, message.receives, POLICY, self.rng)
        clock = w.clock()
        if isinstance(outcome, d.FanOut):
            self.fan_out(outcome, message)
            worker.lease = worker.message = worker.seen = None
            return
        write: Decide | None = None
        match outcome:
            case d.Completed(lease, published):
                write = lambda r: t.complete(r, lease, published, clock)  # noqa: E731
            case d.Failed(lease, error):
                write = lambda r: t.fail(r, lease, error, clock)  # noqa: E731
            case d.Retry(lease, error):
                write = lambda r: t.hand_back(r, lease, error, clock)  # noqa: E731
            case d.HandedBack(lease):
                write = lambda r: t.hand_back(r, lease, None, clock)  # noqa: E731
        if write is None or isinstance(w.transact(write, w.record), JobRecord):
            if self.lose_ack and write is not None:
                self.lose_ack = False
                message.visible_at = w.now + LEASE_S  # as if its visibility simply ran out
            else:
                self.execute_queue_action(outcome, message)
        worker.lease = worker.message = worker.seen = None
        worker.stitching = False

    def fan_out(self, outcome: d.FanOut, message: Message) -> None:
        """As the settler: record the plan, send every part not done, release the job, ack."""
        w, lease, clock = self.world, outcome.lease, self.world.clock()
        split = w.transact(lambda r: t.split(r, lease, outcome.plan, clock), w.record)
        if isinstance(split, t.Refusal) or split.parts is None:
            return  # the lease was lost: nothing sent, the message left alone
        for index, state in enumerate(split.parts.states):
            if state.status is not PartStatus.DONE:
                part = outcome.message.for_part(split.parts.part(index))
                w.queue.append(Message(part, visible_at=w.now))
        if self.lose_ack:  # died before the release: the job's message comes back
            self.lose_ack = False
            message.visible_at = w.now + LEASE_S
            return
        if isinstance(w.transact(lambda r: t.fanned_out(r, lease, clock), w.record), JobRecord):
            w.queue.remove(message)

    def execute_queue_action(self, outcome: d.Outcome, message: Message) -> None:
        w = self.world
        match outcome:
            case d.Completed() | d.Acknowledge() | d.Poison():
                w.queue.remove(message)
            case d.Failed(to_dlq=False):
                w.queue.remove(message)
            case d.Failed(to_dlq=True) | d.Backoff() | d.HandedBack(resend=False):
                message.visible_at = w.now
            case d.Retry(delay_s=delay) | d.GiveBack(delay_s=delay, resend=False):
                message.visible_at = w.now + delay
            case d.GiveBack(delay_s=delay, resend=True):
                message.receives, message.visible_at = 0, w.now + delay
            case d.HandedBack(resend=True):
                message.receives, message.visible_at = 0, w.now

    # ------------------------------------------------------------- invariants

    @invariant()
    def at_most_one_honoured_lease(self) -> None:
        w = self.world
        honoured = [
            x.lease.part
            for x in self.workers
            if x.lease and isinstance(t.renew(w.record, x.lease, 1.0, 0, w.clock()), t.Write)
        ]
        assert len(honoured) == len(set(honoured)), honoured  # one holder per part (or job)

    def teardown(self) -> None:
        """Drain every actor's work, then check where the video ended."""
        w, first = self.world, self.workers[0]
        for _ in range(300):
            if not (w.events or w.queue or w.dlq or any(x.lease for x in self.workers)):
                break
            while w.events:
                self.deliver(*w.events.pop(0))
            for worker in self.workers:
                if worker.lease is not None:
                    self.publish(worker)
            w.now += 2 * LEASE_S
            self.receive(0)
            if first.lease is not None:
                self.publish(first)
            while w.dlq:
                self.dead_letter_handler()
                w.now += 2 * LEASE_S
            self.operator_retry()
        assert not (w.queue or w.events or w.dlq), "the actors did not drain"
        if not w.notified:
            return
        record = w.record
        assert record is not None
        newest = [
            u for u in w.notified if not any(t.is_newer(_order(v), _order(u)) for v in w.notified)
        ]
        assert len(newest) == 1, "is_newer is not a total order on these uploads"
        assert record.job_id == newest[0].message.job_id, "the newest upload does not own it"
        assert record.status in (Status.COMPLETED, Status.FAILED), record.status
        if record.status is Status.FAILED:
            assert record.error is not None and record.error.code


def _order(upload: Upload) -> t.UploadOrder:
    return t.UploadOrder.of_message(upload.message)


JobLife.TestCase.settings = settings(
    max_examples=200, stateful_step_count=80, deadline=None, derandomize=True
)
TestJobLife = JobLife.TestCase
