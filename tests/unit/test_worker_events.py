"""The worker announces a job's end once its final write stands, and never lets that hold it up.

Fakes only (STYLE.md, first tier): the record announced is the one the store wrote, after the
queue action; outcomes that do not end the job, and writes that did not land, announce nothing;
a bus that refuses everything still leaves the job settled, and a shutdown mid-announcement waits
for it. Also the setting that turns events on, for the worker and the Lambdas.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from typing import Any

import pytest
from fakes import (
    RESULT,
    FakeEvents,
    FakePipeline,
    FakeQueue,
    FakeStore,
    delivery,
    job,
    worker_config,
)

from enqueue_lambda.config import ConfigError as LambdaConfigError
from enqueue_lambda.config import DeadLetterConfig, EnqueueConfig
from transcoder.aws.bus import EventBus
from transcoder.config import ConfigError, load_settings
from transcoder.domain.errors import AwsUnavailable, InputRejected, Stalled
from transcoder.domain.job import Reason, Status
from transcoder.domain.record import JobRecord
from transcoder.domain.transitions import Lease
from transcoder.runtime.decision import Completed, Label
from transcoder.runtime.ports import EventsPort
from transcoder.runtime.settlement import Settler
from transcoder.runtime.worker import Worker


async def settle_one(
    store: FakeStore, pipeline: FakePipeline, receive_count: int = 1, events: Any = None
) -> tuple[Worker, FakeQueue, FakeEvents]:
    queue = FakeQueue([delivery(job().model_dump_json(), receive_count=receive_count)])
    fake = FakeEvents(queue=queue)
    publisher: EventsPort = events if events is not None else fake
    worker = Worker(worker_config(), queue, store, pipeline, events=publisher)
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    deadline = time.monotonic() + 5
    while not worker.settled and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    stop.set()
    await asyncio.wait_for(task, timeout=5)
    return worker, queue, fake


async def test_a_completed_job_is_announced_with_the_stored_record_after_the_delete() -> None:
    store = FakeStore()
    worker, _, events = await settle_one(store, FakePipeline())
    assert [s.label for s in worker.settled] == [Label.COMPLETED]
    ((record, queue_before),) = events.published
    assert record == store.get()  # exactly what the final write stored
    assert record.status is Status.COMPLETED and record.completed_at is not None
    assert queue_before == [("delete", "m1")]  # the message was settled first


async def test_a_permanent_failure_is_announced_with_its_reason() -> None:
    pipeline = FakePipeline(behaviour=InputRejected("not a video"))
    _, _, events = await settle_one(FakeStore(), pipeline)
    ((record, _),) = events.published
    assert record.status is Status.FAILED and record.error is not None
    assert (record.error.code, record.error.retryable) == (Reason.NOT_A_VIDEO, False)


async def test_the_last_failed_receive_is_announced_as_retries_exhausted() -> None:
    _, queue, events = await settle_one(FakeStore(), FakePipeline(behaviour=Stalled("x")), 3)
    ((record, _),) = events.published
    assert record.error is not None and record.error.code == Reason.RETRIES_EXHAUSTED
    assert queue.calls == [("visibility", 0)]  # on its way to the DLQ


async def test_a_retry_announces_nothing() -> None:
    worker, _, events = await settle_one(FakeStore(), FakePipeline(behaviour=Stalled("x")))
    assert [s.label for s in worker.settled] == [Label.RETRY]
    assert events.published == []


async def test_a_final_write_that_did_not_land_announces_nothing() -> None:
    lost = FakeStore(lose_lease_on="mark_completed")
    worker, _, events = await settle_one(lost, FakePipeline())
    assert [s.label for s in worker.settled] == [Label.LEASE_LOST]
    assert events.published == []
    down = FakeStore(failures={"mark_completed": [AwsUnavailable("table down")] * 4})
    worker, queue, events = await settle_one(down, FakePipeline())
    assert events.published == [] and queue.calls == []  # redelivered later; that attempt tells


class RefusingClient:
    def __init__(self) -> None:
        self.calls = 0

    async def put_events(self, *, Entries: Sequence[Mapping[str, Any]]) -> Any:
        self.calls += 1
        raise AwsUnavailable("events: ServiceUnavailable (503)")


async def test_a_bus_that_refuses_everything_leaves_the_job_settled() -> None:
    async def no_wait(_: float) -> None:
        return None

    client = RefusingClient()
    store = FakeStore()
    bus = EventBus(client, "app-bus", attempts=3, sleep=no_wait)
    worker, queue, _ = await settle_one(store, FakePipeline(), events=bus)
    assert [s.label for s in worker.settled] == [Label.COMPLETED]
    assert queue.calls == [("delete", "m1")]
    record = store.get()
    assert record is not None and record.status is Status.COMPLETED
    assert client.calls == 3


class SlowEvents:
    """Takes a while to publish; says when it started and whether it finished."""

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.finished: list[JobRecord] = []

    async def publish(self, record: JobRecord) -> bool:
        self.started.set()
        await asyncio.sleep(0.05)
        self.finished.append(record)
        return True


async def test_a_shutdown_during_the_announcement_waits_for_it() -> None:
    store, queue, events = FakeStore(), FakeQueue(), SlowEvents()
    lease = await store.claim(job(), owner="w1", lease_s=60)
    assert isinstance(lease, Lease)
    settler = Settler(queue, store, events=events)
    outcome = Completed(lease, RESULT.published)
    task = asyncio.create_task(settler.commit(outcome, delivery(job().model_dump_json())))
    await events.started.wait()
    task.cancel()  # SIGTERM's hard stop reaches the settlement mid-publish
    with pytest.raises(asyncio.CancelledError):
        await task
    assert [r.status for r in events.finished] == [Status.COMPLETED]


def test_the_bus_setting_takes_a_name_or_an_arn_and_nothing_else(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert load_settings().event_bus is None  # off by default
    arn = "arn:aws:events:eu-west-1:123456789012:event-bus/app-events"
    assert load_settings(event_bus=arn).event_bus == arn
    monkeypatch.setenv("TRANSCODER_EVENT_BUS", "app events!")
    with pytest.raises(ConfigError, match="TRANSCODER_EVENT_BUS"):
        load_settings()
    with pytest.raises(LambdaConfigError, match="TRANSCODER_EVENT_BUS"):
        DeadLetterConfig.from_env({"TRANSCODER_TABLE": "jobs", "TRANSCODER_EVENT_BUS": "a b"})
    dlq = DeadLetterConfig.from_env({"TRANSCODER_TABLE": "jobs", "TRANSCODER_EVENT_BUS": arn})
    assert dlq.event_bus == arn
    enqueue = EnqueueConfig.from_env(
        {"TRANSCODER_TABLE": "jobs", "TRANSCODER_QUEUE_URL": "https://sqs/q"}
    )
    assert enqueue.event_bus is None
