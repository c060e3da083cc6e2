"""The loop's decisions, with fakes: one outcome per delivery, mapped to the right writes.

These are the first tier of tests (STYLE.md): no AWS, no ffmpeg; the adapters and the pipeline are
replaced by fakes that record what the worker asked of them.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any, cast

import pytest

from transcoder.aws.queue import Delivery
from transcoder.aws.status import ClaimDecision, Lease, Verdict, decide_claim
from transcoder.domain.errors import AwsUnavailable, InputRejected, LeaseLost, Stalled
from transcoder.domain.job import (
    ErrorInfo,
    JobMessage,
    RawKey,
    Reason,
    RenditionRecord,
    RenditionStatus,
    SourceFacts,
    Status,
)
from transcoder.media.progress import Progress
from transcoder.runtime.liveness import LivenessConfig
from transcoder.runtime.pipeline import PipelineResult
from transcoder.runtime.worker import Outcome, Worker, WorkerConfig, backoff_s

SOURCE = SourceFacts(
    size_bytes=1,
    duration_s=1.0,
    width=1280,
    height=720,
    display_width=1280,
    display_height=720,
    fps=25.0,
    video_codec="h264",
    audio_codec=None,
    rotation=0,
    pix_fmt="yuv420p",
    container="mp4",
)
RESULT = PipelineResult(
    source=SOURCE,
    renditions={"720p": RenditionRecord(status=RenditionStatus.COMPLETED, key="k")},
)


def job(video: str = "v1") -> JobMessage:
    return JobMessage.for_object(
        bucket="media",
        key=f"raw/u1/{video}.mp4",
        raw=RawKey("u1", video, "mp4"),
        etag="e",
        version_id=None,
        trace_id="t",
    )


def delivery(body: str, receive_count: int = 1, message_id: str = "m1") -> Delivery:
    return Delivery(message_id, f"rh-{message_id}", body, receive_count, time.monotonic())


@dataclass
class FakeQueue:
    inbox: list[Delivery] = field(default_factory=list)
    calls: list[tuple[str, Any]] = field(default_factory=list)
    receive_sizes: list[int] = field(default_factory=list)

    async def receive(self, max_messages: int, *, wait_s: int, visibility_s: int) -> list[Delivery]:
        self.receive_sizes.append(max_messages)
        taken, self.inbox = self.inbox[:max_messages], self.inbox[max_messages:]
        if not taken:
            await asyncio.sleep(0.01)
        return taken

    async def delete(self, d: Delivery) -> None:
        self.calls.append(("delete", d.message_id))

    async def set_visibility(self, d: Delivery, seconds: int) -> None:
        self.calls.append(("visibility", seconds))

    async def dead_letter(self, d: Delivery, *, reason: str, detail: str) -> None:
        self.calls.append(("dead_letter", reason))


@dataclass
class FakeStore:
    record: dict[str, Any] | None = None
    calls: list[tuple[str, Any]] = field(default_factory=list)
    lose_lease_on: str | None = None

    async def get(self, user_id: str, video_id: str) -> dict[str, Any] | None:
        return self.record

    async def claim(self, message: JobMessage, record: Any, *, owner: str, lease_s: float) -> Lease:
        self.calls.append(("claim", owner))
        return Lease(message.user_id, message.video_id, owner, 1)

    async def _write(self, name: str, value: Any) -> None:
        if self.lose_lease_on == name:
            raise LeaseLost("taken over")
        self.calls.append((name, value))

    async def renew(self, lease: Lease, *, lease_s: float, progress: int) -> None:
        await self._write("renew", progress)

    async def confirm(self, lease: Lease) -> None:
        await self._write("confirm", None)

    async def record_source(self, lease: Lease, source: SourceFacts) -> None:
        await self._write("record_source", source.width)

    async def mark_completed(self, lease: Lease, renditions: dict[str, RenditionRecord]) -> None:
        await self._write("mark_completed", sorted(renditions))

    async def mark_failed(self, lease: Lease, error: ErrorInfo) -> None:
        await self._write("mark_failed", error.code)

    async def release(self, lease: Lease, error: ErrorInfo | None) -> None:
        await self._write("release", error.code if error else None)


@dataclass
class FakePipeline:
    behaviour: Any = None  # None: succeed; an exception: raise it; "hang": never finish
    runs: int = 0
    published: bool = False

    async def run(
        self, message: JobMessage, progress: Progress, on_source: Any, before_publish: Any = None
    ) -> PipelineResult:
        self.runs += 1
        await on_source(SOURCE)
        if self.behaviour == "hang":
            progress.enter("transcode")
            await asyncio.sleep(3600)
        if isinstance(self.behaviour, BaseException):
            raise self.behaviour
        if before_publish is not None:
            await before_publish()
        self.published = True
        return RESULT


def make_worker(
    queue: FakeQueue, store: FakeStore, pipeline: FakePipeline, slots: int = 1
) -> Worker:
    config = WorkerConfig(
        slots=slots,
        wait_time_s=0,
        visibility_s=600,
        max_receive_count=3,
        retry_base_s=30,
        retry_max_s=900,
        shutdown_grace_s=5,
        worker_id="w1",
        liveness=LivenessConfig(
            visibility_s=600, interval_s=60, stall_timeout_s=120, max_job_duration_s=3600
        ),
    )
    return Worker(config, cast(Any, queue), cast(Any, store), cast(Any, pipeline))


async def run_until_settled(worker: Worker, count: int = 1, timeout_s: float = 5.0) -> None:
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    deadline = time.monotonic() + timeout_s
    while len(worker.settled) < count and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    stop.set()
    await asyncio.wait_for(task, timeout=timeout_s)


async def test_success_marks_completed_then_deletes() -> None:
    queue, store, pipeline = (
        FakeQueue([delivery(job().model_dump_json())]),
        FakeStore(),
        FakePipeline(),
    )
    worker = make_worker(queue, store, pipeline)
    await run_until_settled(worker)
    assert [s.outcome for s in worker.settled] == [Outcome.COMPLETED]
    assert ("mark_completed", ["720p"]) in store.calls
    assert queue.calls == [("delete", "m1")]


async def test_permanent_failure_is_recorded_and_never_retried() -> None:
    error = InputRejected("a text file", reason=Reason.NOT_A_VIDEO)
    queue, store = FakeQueue([delivery(job().model_dump_json())]), FakeStore()
    worker = make_worker(queue, store, FakePipeline(error))
    await run_until_settled(worker)
    assert worker.settled[0].outcome is Outcome.FAILED
    assert ("mark_failed", Reason.NOT_A_VIDEO) in store.calls
    assert queue.calls == [("delete", "m1")]


async def test_retryable_failure_hands_back_with_backoff() -> None:
    queue, store = FakeQueue([delivery(job().model_dump_json(), receive_count=2)]), FakeStore()
    worker = make_worker(queue, store, FakePipeline(Stalled("no frames")))
    await run_until_settled(worker)
    settled = worker.settled[0]
    assert settled.outcome is Outcome.RETRY
    assert ("release", Reason.STALLED) in store.calls
    assert queue.calls == [("visibility", settled.delay_s)]
    assert 30 <= settled.delay_s <= 60  # 30 s * 2^(2-1), jittered down to half at most


async def test_unknown_errors_default_to_retryable() -> None:
    queue, store = FakeQueue([delivery(job().model_dump_json())]), FakeStore()
    worker = make_worker(queue, store, FakePipeline(RuntimeError("surprise")))
    await run_until_settled(worker)
    assert worker.settled[0].outcome is Outcome.RETRY
    assert ("release", Reason.INTERNAL_ERROR) in store.calls


async def test_last_receive_fails_the_job_and_leaves_the_message_for_the_dlq() -> None:
    queue, store = FakeQueue([delivery(job().model_dump_json(), receive_count=3)]), FakeStore()
    worker = make_worker(queue, store, FakePipeline(AwsUnavailable("503")))
    await run_until_settled(worker)
    assert worker.settled[0].outcome is Outcome.EXHAUSTED
    assert ("mark_failed", Reason.RETRIES_EXHAUSTED) in store.calls
    assert queue.calls == [("visibility", 0)]


async def test_poison_message_goes_to_the_dlq_without_touching_the_table() -> None:
    queue, store, pipeline = FakeQueue([delivery('{"hello": 1}')]), FakeStore(), FakePipeline()
    worker = make_worker(queue, store, pipeline)
    await run_until_settled(worker)
    assert worker.settled[0].outcome is Outcome.POISON
    assert queue.calls == [("dead_letter", Reason.INVALID_MESSAGE)]
    assert store.calls == []
    assert pipeline.runs == 0


async def test_duplicate_of_a_completed_job_is_acknowledged_without_work() -> None:
    message = job()
    record = {"job_id": message.job_id, "status": Status.COMPLETED.value}
    queue, store, pipeline = (
        FakeQueue([delivery(message.model_dump_json())]),
        FakeStore(record),
        FakePipeline(),
    )
    worker = make_worker(queue, store, pipeline)
    await run_until_settled(worker)
    assert worker.settled[0].outcome is Outcome.DUPLICATE
    assert queue.calls == [("delete", "m1")]
    assert pipeline.runs == 0
    assert store.calls == []


async def test_live_lease_elsewhere_backs_off_without_deleting() -> None:
    message = job()
    record = {
        "job_id": message.job_id,
        "status": Status.PROCESSING.value,
        "lease_expires_at": time.time() + 300,
    }
    queue, pipeline = FakeQueue([delivery(message.model_dump_json())]), FakePipeline()
    worker = make_worker(queue, FakeStore(record), pipeline)
    await run_until_settled(worker)
    settled = worker.settled[0]
    assert settled.outcome is Outcome.HELD
    assert queue.calls == [("visibility", settled.delay_s)]
    assert settled.delay_s >= 299
    assert pipeline.runs == 0


async def test_lost_lease_at_commit_writes_nothing_and_keeps_the_message() -> None:
    queue = FakeQueue([delivery(job().model_dump_json())])
    store = FakeStore(lose_lease_on="mark_completed")
    worker = make_worker(queue, store, FakePipeline())
    await run_until_settled(worker)
    assert worker.settled[0].outcome is Outcome.LEASE_LOST
    assert queue.calls == []


async def test_a_worker_that_lost_its_lease_publishes_nothing() -> None:
    queue, pipeline = FakeQueue([delivery(job().model_dump_json())]), FakePipeline()
    store = FakeStore(lose_lease_on="confirm")
    worker = make_worker(queue, store, pipeline)
    await run_until_settled(worker)
    assert worker.settled[0].outcome is Outcome.LEASE_LOST
    assert not pipeline.published
    assert queue.calls == []
    assert not any(name.startswith("mark_") for name, _ in store.calls)


async def test_shutdown_hands_a_long_job_back_at_once() -> None:
    queue, store = FakeQueue([delivery(job().model_dump_json())]), FakeStore()
    pipeline = FakePipeline("hang")
    worker = make_worker(queue, store, pipeline)
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    while pipeline.runs == 0:
        await asyncio.sleep(0.01)
    started = time.monotonic()
    stop.set()
    await asyncio.wait_for(task, timeout=5)
    assert time.monotonic() - started < 2  # no ETA: interrupted now, not after the grace
    assert [s.outcome for s in worker.settled] == [Outcome.HANDED_BACK]
    assert ("release", None) in store.calls
    assert queue.calls == [("visibility", 0)]


async def test_receives_only_as_many_messages_as_free_slots() -> None:
    bodies = [delivery(job(f"v{i}").model_dump_json(), message_id=f"m{i}") for i in range(5)]
    queue, store = FakeQueue(bodies), FakeStore()
    worker = make_worker(queue, store, FakePipeline(), slots=2)
    await run_until_settled(worker, count=5)
    assert len(worker.settled) == 5
    assert max(queue.receive_sizes) == 2
    assert all(size >= 1 for size in queue.receive_sizes)


@pytest.mark.parametrize(
    ("record", "expected"),
    [
        (None, ClaimDecision(Verdict.CLAIM, fresh=True)),
        ({"status": "QUEUED"}, ClaimDecision(Verdict.CLAIM)),
        ({"status": "COMPLETED"}, ClaimDecision(Verdict.DUPLICATE)),
        (
            {"status": "FAILED", "error": {"retryable": False}},
            ClaimDecision(Verdict.ALREADY_FAILED),
        ),
        ({"status": "FAILED", "error": {"retryable": True}}, ClaimDecision(Verdict.CLAIM)),
        ({"status": "PROCESSING", "lease_expires_at": 900.0}, ClaimDecision(Verdict.CLAIM)),
        (
            {"status": "PROCESSING", "lease_expires_at": 1100.0},
            ClaimDecision(Verdict.HELD, lease_remaining_s=100.0),
        ),
    ],
)
def test_decide_claim_for_the_same_job(
    record: dict[str, Any] | None, expected: ClaimDecision
) -> None:
    message = job()
    if record is not None:
        record = {**record, "job_id": message.job_id}
    assert decide_claim(record, message, now=1000.0) == expected


def test_decide_claim_against_another_upload_of_the_same_video() -> None:
    message = job()
    newer = {"job_id": "f" * 32, "status": "QUEUED", "submitted_at": "9999-01-01T00:00:00.000Z"}
    older = {"job_id": "f" * 32, "status": "COMPLETED", "submitted_at": "2000-01-01T00:00:00.000Z"}
    running = {**older, "status": "PROCESSING", "lease_expires_at": 2000.0}
    assert decide_claim(newer, message, 1000.0).verdict is Verdict.SUPERSEDED
    assert decide_claim(older, message, 1000.0) == ClaimDecision(Verdict.CLAIM, fresh=True)
    assert decide_claim(running, message, 1000.0).verdict is Verdict.HELD


def test_backoff_grows_with_receives_and_is_capped() -> None:
    import random

    rng = random.Random(7)
    steps = [backoff_s(n, 30, 900, rng) for n in range(1, 8)]
    assert all(15 <= steps[0] <= 30 for _ in steps)
    assert steps[-1] <= 900
    assert steps[3] > steps[0]
