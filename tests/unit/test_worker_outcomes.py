"""The loop's decisions, with fakes: one outcome per delivery, mapped to the right writes.

These are the first tier of tests (STYLE.md): no AWS, no ffmpeg; the adapters and the pipeline are
replaced by fakes that record what the worker asked of them.
"""

from __future__ import annotations

import asyncio
import time

from fakes import (
    FakePipeline,
    FakeQueue,
    FakeStore,
    delivery,
    job,
    record_for,
    worker_config,
)

from transcoder.domain.errors import AwsUnavailable, InputRejected, Stalled
from transcoder.domain.job import Reason, Status
from transcoder.runtime.decision import Label
from transcoder.runtime.worker import PipelinePort, Worker


def make_worker(
    queue: FakeQueue, store: FakeStore, pipeline: PipelinePort, slots: int = 1
) -> Worker:
    return Worker(worker_config(slots), queue, store, pipeline)


def labels(worker: Worker) -> list[Label]:
    return [s.label for s in worker.settled]


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
    assert labels(worker) == [Label.COMPLETED]
    assert ("mark_completed", ["720p"]) in store.calls
    assert queue.calls == [("delete", "m1")]


async def test_permanent_failure_is_recorded_and_never_retried() -> None:
    error = InputRejected("a text file", reason=Reason.NOT_A_VIDEO)
    queue, store = FakeQueue([delivery(job().model_dump_json())]), FakeStore()
    worker = make_worker(queue, store, FakePipeline(error))
    await run_until_settled(worker)
    assert worker.settled[0].label is Label.FAILED
    assert ("mark_failed", Reason.NOT_A_VIDEO) in store.calls
    assert queue.calls == [("delete", "m1")]


async def test_retryable_failure_hands_back_with_backoff() -> None:
    queue, store = FakeQueue([delivery(job().model_dump_json(), receive_count=2)]), FakeStore()
    worker = make_worker(queue, store, FakePipeline(Stalled("no frames")))
    await run_until_settled(worker)
    settled = worker.settled[0]
    delay = getattr(settled.outcome, "delay_s", -1)
    assert settled.label is Label.RETRY
    assert ("release", Reason.STALLED) in store.calls
    assert queue.calls == [("visibility", delay)]
    assert 30 <= delay <= 60  # 30 s * 2^(2-1), jittered down to half at most


async def test_unknown_errors_default_to_retryable() -> None:
    queue, store = FakeQueue([delivery(job().model_dump_json())]), FakeStore()
    worker = make_worker(queue, store, FakePipeline(RuntimeError("surprise")))
    await run_until_settled(worker)
    assert worker.settled[0].label is Label.RETRY
    assert ("release", Reason.INTERNAL_ERROR) in store.calls


async def test_last_receive_fails_the_job_and_leaves_the_message_for_the_dlq() -> None:
    queue, store = FakeQueue([delivery(job().model_dump_json(), receive_count=3)]), FakeStore()
    worker = make_worker(queue, store, FakePipeline(AwsUnavailable("503")))
    await run_until_settled(worker)
    assert worker.settled[0].label is Label.EXHAUSTED
    assert ("mark_failed", Reason.RETRIES_EXHAUSTED) in store.calls
    assert queue.calls == [("visibility", 0)]


async def test_poison_message_goes_to_the_dlq_without_touching_the_table() -> None:
    queue, store, pipeline = FakeQueue([delivery('{"hello": 1}')]), FakeStore(), FakePipeline()
    worker = make_worker(queue, store, pipeline)
    await run_until_settled(worker)
    assert worker.settled[0].label is Label.POISON
    assert queue.calls == [("dead_letter", Reason.INVALID_MESSAGE)]
    assert store.calls == []
    assert pipeline.runs == 0


async def test_duplicate_of_a_completed_job_is_acknowledged_without_work() -> None:
    message = job()
    store = FakeStore()
    store.put(record_for(message, status=Status.COMPLETED))
    queue, pipeline = FakeQueue([delivery(message.model_dump_json())]), FakePipeline()
    worker = make_worker(queue, store, pipeline)
    await run_until_settled(worker)
    assert worker.settled[0].label is Label.DUPLICATE
    assert queue.calls == [("delete", "m1")]
    assert pipeline.runs == 0
    assert store.calls == []


async def test_live_lease_elsewhere_backs_off_without_deleting() -> None:
    message = job()
    store = FakeStore()
    store.put(record_for(message, status=Status.PROCESSING, lease_expires_at=time.time() + 300))
    queue, pipeline = FakeQueue([delivery(message.model_dump_json())]), FakePipeline()
    worker = make_worker(queue, store, pipeline)
    await run_until_settled(worker)
    settled = worker.settled[0]
    delay = getattr(settled.outcome, "delay_s", -1)
    assert settled.label is Label.HELD
    assert queue.calls == [("visibility", delay)]
    assert delay >= 299
    assert pipeline.runs == 0


async def test_lost_lease_at_commit_writes_nothing_and_keeps_the_message() -> None:
    queue = FakeQueue([delivery(job().model_dump_json())])
    store = FakeStore(lose_lease_on="mark_completed")
    worker = make_worker(queue, store, FakePipeline())
    await run_until_settled(worker)
    assert worker.settled[0].label is Label.LEASE_LOST
    assert queue.calls == []


async def test_a_worker_that_lost_its_lease_publishes_nothing() -> None:
    queue, pipeline = FakeQueue([delivery(job().model_dump_json())]), FakePipeline()
    store = FakeStore(lose_lease_on="confirm")
    worker = make_worker(queue, store, pipeline)
    await run_until_settled(worker)
    assert worker.settled[0].label is Label.LEASE_LOST
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
    assert labels(worker) == [Label.HANDED_BACK]
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
