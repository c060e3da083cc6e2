"""ECS task scale-in protection: the agent client and the worker's use of it, with fakes.

The agent is a local stand-in (tests/faults/agent.py) that records each call.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from fakes import BUCKET, SOURCE, FakePipeline, FakeStore
from faults.agent import Agent

from transcoder.aws.protection import TaskProtection, for_agent, granted
from transcoder.aws.queue import Delivery
from transcoder.domain.job import JobMessage, Published, RawKey
from transcoder.media.progress import Progress
from transcoder.ops.emulator import free_port
from transcoder.runtime.decision import RetryPolicy
from transcoder.runtime.liveness import LivenessConfig
from transcoder.runtime.pipeline import PipelineResult
from transcoder.runtime.ports import ProtectionPort
from transcoder.runtime.worker import Worker, WorkerConfig


@pytest.fixture
async def agent() -> AsyncIterator[Agent]:
    stand_in = await Agent().start()
    yield stand_in
    await stand_in.stop()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_granted_reads_the_agent_answers() -> None:
    ok = {"protection": {"ProtectionEnabled": True, "TaskArn": "t"}}
    assert granted(200, ok, enabled=True)
    assert not granted(200, ok, enabled=False)
    assert not granted(200, {"failure": {"Reason": "TASK_NOT_VALID"}}, enabled=True)
    assert not granted(500, {"error": {"Code": "ServerException"}}, enabled=True)
    assert not granted(200, {}, enabled=True)


async def test_protect_renews_only_past_half_the_window_then_releases(agent: Agent) -> None:
    clock = Clock()
    protection = TaskProtection(agent.url, expires_s=600, clock=clock)
    assert await protection.acquire()
    assert [c.body for c in agent.calls] == [{"ProtectionEnabled": True, "ExpiresInMinutes": 10}]
    clock.now += 240  # 6 of 10 minutes left: nothing to do
    await protection.renew()
    assert len(agent.calls) == 1
    clock.now += 120  # 4 minutes left: renew
    await protection.renew()
    assert len(agent.calls) == 2
    await protection.release()
    await protection.release()  # already released: no call
    assert [c.body for c in agent.calls][2:] == [{"ProtectionEnabled": False}]
    assert not protection.protected


@pytest.mark.parametrize("mode", ["refuse", "error"])
async def test_a_refusal_is_not_protection(agent: Agent, mode: str) -> None:
    agent.mode = mode
    protection = TaskProtection(agent.url, expires_s=600)
    assert not await protection.acquire()
    assert not protection.protected
    await protection.renew()  # never raises
    assert len(agent.calls) == 2


async def test_a_task_outside_any_service_stops_asking(agent: Agent) -> None:
    agent.mode = "standalone"
    protection = TaskProtection(agent.url, expires_s=600)
    assert await protection.acquire()  # nothing to protect against: work goes on
    assert await protection.acquire()
    await protection.release()
    assert len(agent.calls) == 1


async def test_an_unreachable_agent_is_not_protection() -> None:
    protection = TaskProtection(f"http://127.0.0.1:{free_port()}", expires_s=600, timeout_s=2)
    assert not await protection.acquire()


def test_no_agent_uri_means_no_protection_needed() -> None:
    assert type(for_agent(None, expires_s=600)).__name__ == "Unprotected"
    assert isinstance(for_agent("http://169.254.170.2/api/x", expires_s=600), TaskProtection)


# ------------------------------------------------------------- the worker's use, with fakes


def job_body(video: str = "v1") -> str:
    message = JobMessage.for_object(
        bucket=BUCKET,
        key=f"raw/u1/{video}.mp4",
        raw=RawKey("u1", video, "mp4"),
        etag="e",
        version_id=None,
        trace_id="t",
    )
    return message.model_dump_json()


@dataclass
class Trace:
    """What happened, in order: ("agent", enabled), ("receive", (count, protected)), ..."""

    entries: list[tuple[str, Any]] = field(default_factory=list)

    def of(self, kind: str) -> list[Any]:
        return [value for name, value in self.entries if name == kind]


@dataclass
class FakeQueue:
    trace: Trace
    inbox: list[Delivery] = field(default_factory=list)
    protection: Any = None  # whose state each receive records

    async def receive(self, max_messages: int, *, wait_s: int, visibility_s: int) -> list[Delivery]:
        taken, self.inbox = self.inbox[:max_messages], self.inbox[max_messages:]
        protected = bool(self.protection and self.protection.protected)
        self.trace.entries.append(("receive", (len(taken), protected)))
        await asyncio.sleep(0.05)
        return taken

    async def delete(self, delivery: Delivery) -> None:
        self.trace.entries.append(("delete", delivery.message_id))

    async def set_visibility(self, delivery: Delivery, seconds: int) -> None:
        self.trace.entries.append(("visibility", seconds))

    async def requeue(self, delivery: Delivery, *, delay_s: int = 0) -> str:
        self.trace.entries.append(("requeue", delay_s))
        return "again"

    async def dead_letter(self, delivery: Delivery, *, reason: str, detail: str) -> None:
        self.trace.entries.append(("dead_letter", reason))

    async def send(self, body: str, *, delay_s: int = 0) -> str:
        self.trace.entries.append(("send", delay_s))
        return "sent"


class SlowPipeline(FakePipeline):
    async def run(
        self, message: JobMessage, progress: Progress, on_source: Any, before_publish: Any = None
    ) -> PipelineResult:
        await asyncio.sleep(0.5)
        return PipelineResult(source=SOURCE, published=Published(renditions={}))


class CountingProtection:
    protected = True

    def __init__(self) -> None:
        self.renewals = 0

    async def acquire(self) -> bool:
        return True

    async def renew(self) -> None:
        self.renewals += 1

    async def release(self) -> None:
        return None


def worker(queue: FakeQueue, protection: ProtectionPort) -> Worker:
    config = WorkerConfig(
        slots=1,
        wait_time_s=0,
        visibility_s=60,
        shutdown_grace_s=5,
        worker_id="w1",
        bucket=BUCKET,
        policy=RetryPolicy(3, 60, 1, 2, 1, 2),
        liveness=LivenessConfig(
            visibility_s=60, interval_s=0.1, stall_timeout_s=60, max_job_duration_s=3600
        ),
    )
    return Worker(config, queue, FakeStore(), SlowPipeline(), protection=protection)


async def run_for(target: Worker, seconds: float) -> None:
    stop = asyncio.Event()
    task = asyncio.create_task(target.run(stop))
    await asyncio.sleep(seconds)
    stop.set()
    await asyncio.wait_for(task, timeout=10)


def traced(protection: TaskProtection, trace: Trace) -> TaskProtection:
    """Record each call to the agent in the trace, in order with the queue's calls."""
    put = protection._put

    async def traced_put(*, enabled: bool) -> bool:
        trace.entries.append(("agent", enabled))
        return await put(enabled=enabled)

    protection._put = traced_put  # type: ignore[method-assign]
    return protection


async def test_worker_protects_while_busy_and_polls_unprotected_when_idle(agent: Agent) -> None:
    trace = Trace()
    protection = traced(TaskProtection(agent.url, expires_s=600), trace)
    queue = FakeQueue(trace, [Delivery("m1", "rh1", job_body(), 1, time.monotonic())], protection)
    await run_for(worker(queue, protection), 1.2)
    entries = trace.entries
    received = entries.index(("receive", (1, False)))  # idle: polled unprotected
    assert entries[received + 1] == ("agent", True)  # protected before the job was claimed
    done = entries.index(("delete", "m1"))
    after = entries.index(("receive", (0, True)), done)  # still working: protected receive
    assert entries[after + 1] == ("agent", False)  # nothing came, nothing runs: released
    assert trace.of("agent") == [True, False]  # idle polls cost no agent calls
    assert set(trace.of("receive")[2:]) == {(0, False)}


async def test_refused_protection_gives_the_work_back_and_stops_receiving(agent: Agent) -> None:
    agent.mode = "refuse"
    trace = Trace()
    protection = traced(TaskProtection(agent.url, expires_s=600), trace)
    queue = FakeQueue(trace, [Delivery("m1", "rh1", job_body(), 1, time.monotonic())], protection)
    await run_for(worker(queue, protection), 2.0)
    assert trace.entries[:3] == [("receive", (1, False)), ("agent", True), ("visibility", 0)]
    assert trace.of("receive") == [(1, False)]  # nothing more until the agent grants
    assert 2 <= len(agent.calls) <= 3  # asking again with backoff, not hammering the agent
    assert trace.of("delete") == []


async def test_liveness_renews_protection_while_a_job_runs() -> None:
    protection = CountingProtection()
    queue = FakeQueue(Trace(), [Delivery("m1", "rh1", job_body(), 1, time.monotonic())])
    await run_for(worker(queue, protection), 1.0)
    assert protection.renewals >= 3  # every 0.1 s heartbeat of a 0.5 s job
