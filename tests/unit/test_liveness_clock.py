"""Liveness on an injected clock: hours of heartbeats at production settings, no real waiting."""

from __future__ import annotations

import asyncio

import pytest
from fakes import FakeClock, FakeQueue, FakeStore, delivery, job, record_for

from transcoder.domain.errors import LeaseLost, ProcessingTimeout, Stalled
from transcoder.domain.job import Status
from transcoder.domain.transitions import Lease
from transcoder.media.progress import Progress
from transcoder.runtime.liveness import LEASE_SKEW_S, Liveness, LivenessConfig

PRODUCTION = LivenessConfig(
    visibility_s=600, interval_s=15, stall_timeout_s=120, max_job_duration_s=11.5 * 3600
)


def running(clock: FakeClock, store: FakeStore) -> tuple[Lease, Progress]:
    message = job()
    store.epoch_s = clock.monotonic  # the record's lease expiry on the same clock
    store.put(
        record_for(
            message,
            status=Status.PROCESSING,
            lease_owner="w1",
            attempts=1,
            lease_expires_at=clock.now + 600,
        )
    )
    return Lease("u1", "v1", message.job_id, "w1", 1), Progress(clock=clock.monotonic)


def liveness(
    clock: FakeClock, queue: FakeQueue, store: FakeStore, lease: Lease, progress: Progress
) -> Liveness:
    d = delivery("{}", received_at=clock.now)
    return Liveness(
        queue, store, d, lease, progress, PRODUCTION, monotonic=clock.monotonic, sleep=clock.sleep
    )


async def watch_until(clock: FakeClock, watcher: Liveness, fake_s: float) -> BaseException | None:
    task = asyncio.ensure_future(watcher.watch())
    deadline = clock.now + fake_s
    while not task.done() and clock.now < deadline:
        await asyncio.sleep(0)
    if not task.done():
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return None
    return task.exception()


async def test_an_hour_of_heartbeats_keeps_visibility_and_lease_ahead_of_the_clock() -> None:
    clock, queue, store = FakeClock(), FakeQueue(), FakeStore()
    lease, progress = running(clock, store)
    progress.enter("transcode")

    async def frames() -> None:  # ffmpeg advancing every 5 s of fake time
        while True:
            await clock.sleep(5)
            progress.frame += 1
            progress.last_advance = clock.now

    feeder = asyncio.ensure_future(frames())
    try:
        assert (
            await watch_until(clock, liveness(clock, queue, store, lease, progress), 3600) is None
        )
    finally:
        feeder.cancel()
    extensions = [seconds for name, seconds in queue.calls if name == "visibility"]
    renewals = [name for name, _ in store.calls if name == "renew"]
    assert 3600 / 600 <= len(extensions) <= 3600 / 200 + 1  # before 2/3 of 600 s is used
    assert len(renewals) >= 3600 / 15 - 2  # every heartbeat
    record = store.get()
    assert record is not None and record.lease_expires_at is not None
    assert record.lease_expires_at <= clock.now + 600 - LEASE_SKEW_S + 15


async def test_no_new_frame_for_the_stall_timeout_is_a_stall_in_fake_time() -> None:
    clock, queue, store = FakeClock(), FakeQueue(), FakeStore()
    lease, progress = running(clock, store)
    progress.enter("transcode")
    raised = await watch_until(clock, liveness(clock, queue, store, lease, progress), 600)
    assert isinstance(raised, Stalled)
    assert 120 <= clock.now - progress.last_advance <= 120 + 15


async def test_a_job_at_its_duration_cap_fails_before_the_12_hour_limit() -> None:
    clock, queue, store = FakeClock(), FakeQueue(), FakeStore()
    lease, progress = running(clock, store)  # not in transcode: no stall detection
    raised = await watch_until(clock, liveness(clock, queue, store, lease, progress), 13 * 3600)
    assert isinstance(raised, ProcessingTimeout)
    assert clock.now - 1000.0 < 12 * 3600


@pytest.mark.parametrize("lost_on", ["renew"])
async def test_another_attempt_taking_over_ends_the_job_at_the_next_heartbeat(lost_on: str) -> None:
    clock, queue = FakeClock(), FakeQueue()
    store = FakeStore(lose_lease_on=lost_on)
    lease, progress = running(clock, store)
    raised = await watch_until(clock, liveness(clock, queue, store, lease, progress), 120)
    assert isinstance(raised, LeaseLost)
    assert clock.now - 1000.0 <= 15 + 1
