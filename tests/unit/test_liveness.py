"""The liveness task with fakes: what it renews, when it gives up, and what it never does.

Short real timings (a visibility of 3 s, heartbeats of 0.1-0.2 s); no AWS, no ffmpeg.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import fakes
import pytest

from transcoder.aws.queue import Delivery
from transcoder.domain.errors import AwsUnavailable, LeaseLost, ProcessingTimeout, Stalled
from transcoder.domain.transitions import Lease
from transcoder.media.ffmpeg import ProgressSample
from transcoder.media.progress import Progress
from transcoder.runtime.liveness import LEASE_SKEW_S, Liveness, LivenessConfig, supervise

LEASE = Lease("u1", "v1", "0" * 32, "w1", 1)


@dataclass
class Script:
    """Answers for successive calls: None succeeds, an exception is raised, "hang" never returns."""

    answers: list[Any] = field(default_factory=list)
    calls: list[tuple[float, Any]] = field(default_factory=list)

    async def play(self, value: Any) -> None:
        self.calls.append((time.monotonic(), value))
        answer = self.answers.pop(0) if self.answers else None
        if answer == "hang":
            await asyncio.sleep(3600)
        if isinstance(answer, BaseException):
            raise answer


@dataclass
class FakeQueue(fakes.FakeQueue):
    """The typed fake queue, whose visibility changes follow a script."""

    script: Script = field(default_factory=Script)

    async def set_visibility(self, delivery: Delivery, seconds: int) -> None:
        await self.script.play(seconds)


@dataclass
class FakeStore(fakes.FakeStore):
    """The typed fake store, whose renewals follow a script."""

    script: Script = field(default_factory=Script)

    async def renew(self, lease: Lease, *, lease_s: float, progress: int) -> None:
        await self.script.play(lease_s)


def watcher(
    queue: FakeQueue,
    store: FakeStore,
    *,
    visibility_s: int = 3,
    interval_s: float = 0.1,
    stall_timeout_s: float = 60,
    max_job_duration_s: float = 3600,
    received_at: float | None = None,
    progress: Progress | None = None,
    extra: tuple[Any, ...] = (),
) -> Liveness:
    received = time.monotonic() if received_at is None else received_at
    delivery = Delivery("m1", "rh1", "{}", 1, received)
    config = LivenessConfig(visibility_s, interval_s, stall_timeout_s, max_job_duration_s)
    return Liveness(queue, store, delivery, LEASE, progress or Progress(), config, extra)


async def watch_for(liveness: Liveness, seconds: float) -> BaseException | None:
    """Run ``watch`` for at most ``seconds``; the exception it raised, or None if still going."""
    try:
        await asyncio.wait_for(liveness.watch(), timeout=seconds)
    except TimeoutError:
        return None
    except Exception as exc:
        return exc
    raise AssertionError("watch returned")


async def test_extends_visibility_early_and_keeps_the_lease_just_inside_it() -> None:
    queue, store = FakeQueue(), FakeStore()
    assert await watch_for(watcher(queue, store, interval_s=0.2), 2.5) is None
    extensions = [seconds for _, seconds in queue.script.calls]
    assert extensions and set(extensions) == {3}  # once less than 2/3 of the 3 s was left
    leases = [lease_s for _, lease_s in store.script.calls]
    assert len(leases) >= 10
    assert all(0 < lease_s <= 3 - LEASE_SKEW_S + 0.01 for lease_s in leases)


@pytest.mark.parametrize("where", ["queue", "store"])
async def test_a_lost_lease_ends_the_job_at_once(where: str) -> None:
    queue, store = FakeQueue(), FakeStore()
    lost = LeaseLost("receipt handle refused" if where == "queue" else "condition failed")
    (queue if where == "queue" else store).script.answers = [lost]
    liveness = watcher(queue, store, interval_s=0.1)  # extends after about 1 s of 3
    started = time.monotonic()
    raised = await watch_for(liveness, 3)
    assert raised is lost
    assert time.monotonic() - started < 1.6
    if where == "queue":  # nothing written after the sign
        assert all(at < queue.script.calls[-1][0] for at, _ in store.script.calls)


async def test_transient_errors_are_retried_sooner_inside_the_margin() -> None:
    queue, store = FakeQueue(), FakeStore()
    store.script.answers = [AwsUnavailable("503"), AwsUnavailable("503"), None]
    liveness = watcher(queue, store, interval_s=1.0)
    assert await watch_for(liveness, 1.9) is None
    times = [at for at, _ in store.script.calls]
    assert len(times) >= 3
    assert times[2] - times[0] < 1.0  # the retries did not wait a whole heartbeat each


async def test_transient_errors_past_the_margin_give_the_job_up() -> None:
    queue, store = FakeQueue(), FakeStore()
    queue.script.answers = [AwsUnavailable("down")] * 100
    store.script.answers = [AwsUnavailable("down")] * 100
    started = time.monotonic()
    raised = await watch_for(watcher(queue, store, interval_s=0.2), 6)
    assert isinstance(raised, LeaseLost)
    assert time.monotonic() - started < 3  # before the 3 s visibility ran out


async def test_a_hung_renewal_is_cut_at_the_margin() -> None:
    queue, store = FakeQueue(), FakeStore()
    store.script.answers = ["hang"]
    started = time.monotonic()
    raised = await watch_for(watcher(queue, store, interval_s=0.2), 6)
    assert isinstance(raised, LeaseLost)
    assert time.monotonic() - started < 3.2


async def test_resumed_after_the_visibility_lapsed_writes_nothing() -> None:
    queue, store = FakeQueue(), FakeStore()
    paused = watcher(queue, store, received_at=time.monotonic() - 10)  # e.g. after SIGSTOP
    raised = await watch_for(paused, 2)
    assert isinstance(raised, LeaseLost)
    assert queue.script.calls == [] and store.script.calls == []


async def test_no_new_frame_for_the_stall_timeout_is_a_stall() -> None:
    progress = Progress(duration_s=10)
    progress.enter("transcode")
    progress.update(ProgressSample(frame=10, out_time_s=0.4, speed=1.0, done=False))
    liveness = watcher(FakeQueue(), FakeStore(), stall_timeout_s=0.5, progress=progress)
    raised = await watch_for(liveness, 3)
    assert isinstance(raised, Stalled)
    assert raised.retryable


async def test_a_job_reaching_its_duration_cap_fails_permanently() -> None:
    liveness = watcher(FakeQueue(), FakeStore(), interval_s=0.1, max_job_duration_s=0.6)
    raised = await watch_for(liveness, 3)
    assert isinstance(raised, ProcessingTimeout)
    assert not raised.retryable


async def test_extra_renewals_run_with_every_heartbeat() -> None:
    renewed: list[float] = []

    async def protect() -> None:
        renewed.append(time.monotonic())

    liveness = watcher(FakeQueue(), FakeStore(), interval_s=0.1, extra=(protect,))
    assert await watch_for(liveness, 0.75) is None
    assert len(renewed) >= 4


async def test_supervise_kills_the_work_when_the_watcher_raises() -> None:
    cancelled = asyncio.Event()

    async def work() -> str:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return "done"

    async def watch() -> Any:
        await asyncio.sleep(0.05)
        raise LeaseLost("taken over")

    with pytest.raises(LeaseLost):
        await supervise(work(), watch())
    assert cancelled.is_set()


async def test_a_cancellation_swallowed_inside_a_renewal_still_stops_the_watcher() -> None:
    """The job settles even if the renewal under way eats the cancellation.

    On Python 3.11 ``asyncio.wait_for`` returns its inner call's result instead of raising when it
    is cancelled just as that call finishes. The watcher then kept renewing a finished job's lease
    and ``supervise`` waited on it: the job never settled. Here a renewal that goes through
    ``wait_for`` (as ours did) gets its answer in the same turn of the loop as the job ends.
    """
    loop = asyncio.get_running_loop()
    in_flight: asyncio.Future[asyncio.Future[None]] = loop.create_future()

    class RacingStore(FakeStore):
        async def renew(self, lease: Lease, *, lease_s: float, progress: int) -> None:
            call: asyncio.Future[None] = loop.create_future()
            if not in_flight.done():
                in_flight.set_result(call)
            else:
                call.set_result(None)
            await asyncio.wait_for(call, timeout=10)  # as our renewal once did

    async def work() -> str:
        call = await in_flight
        loop.call_soon(call.set_result, None)  # the renewal's answer lands with our cancel
        return "done"

    liveness = watcher(FakeQueue(), RacingStore(), interval_s=0.05)
    task = asyncio.ensure_future(supervise(work(), liveness.watch()))
    done, _ = await asyncio.wait({task}, timeout=3)
    if not done:
        task.cancel()  # the next cancel lands in the sleep and stops it
        await asyncio.gather(task, return_exceptions=True)
        pytest.fail("the watcher kept renewing after the job had finished")
    assert task.result() == "done"
