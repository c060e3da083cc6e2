"""A sick worker takes itself out: the fitness checks, and the loop's retirement, with fakes.

Free space is injected (``usage``) and ffmpeg's presence too (``which``); time is a ``FakeClock``,
so the linger before the exit costs no wall time.
"""

from __future__ import annotations

import asyncio
import dataclasses
import errno
from pathlib import Path

import pytest
from fakes import (
    SOURCE,
    FakeClock,
    FakePipeline,
    FakeQueue,
    FakeStore,
    delivery,
    job,
    record_for,
    worker_config,
)

from transcoder.config import Settings
from transcoder.domain.errors import RetryableError, Stalled, WorkerEnvironmentError
from transcoder.domain.job import JobMessage, Reason, Status
from transcoder.media.progress import Progress
from transcoder.runtime import app
from transcoder.runtime.decision import Label
from transcoder.runtime.fitness import Fitness, FitnessConfig, Usage
from transcoder.runtime.pipeline import PipelineResult, PublishGuard, SourceCallback
from transcoder.runtime.worker import EXIT_UNFIT, PipelinePort, Worker

GIB = 1024**3
CONFIG = FitnessConfig(
    reserve_bytes=100 * 1024**2, margin_ratio=0.5, max_environment_failures=3, ladder_kbps=8_000
)
GENEROUS_S = 10.0


class Disk:
    """A filesystem whose free space the test sets."""

    def __init__(self, free: int, total: int = 20 * GIB) -> None:
        self.free, self.total = free, total

    def __call__(self, _: Path) -> Usage:
        return Usage(self.total, self.total - self.free, self.free)


def fitness(tmp_path: Path, disk: Disk, *, ffmpeg: bool = True) -> Fitness:
    return Fitness(
        CONFIG, tmp_path, usage=disk, which=lambda name: f"/usr/bin/{name}" if ffmpeg else None
    )


# ---------------------------------------------------------------------- the checks


def test_a_healthy_environment_is_fit(tmp_path: Path) -> None:
    assert fitness(tmp_path, Disk(GIB)).check() is None


@pytest.mark.parametrize(
    ("disk", "ffmpeg", "reason"),
    [
        (Disk(GIB), False, Reason.FFMPEG_MISSING),
        (Disk(10 * 1024**2), True, Reason.SCRATCH_FULL),
    ],
)
def test_a_missing_ffmpeg_or_a_full_scratch_is_unfit(
    tmp_path: Path, disk: Disk, ffmpeg: bool, reason: Reason
) -> None:
    unfit = fitness(tmp_path, disk, ffmpeg=ffmpeg).check()
    assert unfit is not None and unfit.reason is reason


def test_a_scratch_that_cannot_be_written_is_unfit(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    unfit = Fitness(CONFIG, blocker / "scratch", usage=Disk(GIB)).check()
    assert unfit is not None and unfit.reason is Reason.SCRATCH_UNWRITABLE


def test_unfit_is_final_even_when_the_disk_frees_up(tmp_path: Path) -> None:
    disk = Disk(0)
    checks = fitness(tmp_path, disk)
    assert checks.check() is not None
    disk.free = GIB
    assert checks.check() is not None


def test_room_for_a_job_comes_from_its_duration_and_the_ladder(tmp_path: Path) -> None:
    # 8000 kbps for 60 s = 60 MB, plus half: 90 MB.
    assert fitness(tmp_path, Disk(GIB)).need_bytes(60.0) == 90_000_000
    long_source = SOURCE.model_copy(update={"duration_s": 60.0})
    fitness(tmp_path, Disk(GIB)).make_room(long_source)  # fits
    short_of_room = fitness(tmp_path, Disk(80_000_000))
    with pytest.raises(WorkerEnvironmentError):
        short_of_room.make_room(long_source)
    assert short_of_room.unfit is not None and short_of_room.unfit.reason is Reason.SCRATCH_FULL


def test_with_hls_every_rendition_is_in_scratch_twice(tmp_path: Path) -> None:
    # the MP4 and its HLS segments hold the same packets: 2 x 60 MB, plus half: 180 MB
    both = dataclasses.replace(CONFIG, output_copies=2)
    checks = Fitness(both, tmp_path, usage=Disk(GIB), which=lambda name: f"/usr/bin/{name}")
    assert checks.need_bytes(60.0) == 180_000_000
    assert app.fitness_config(Settings(hls=True)).output_copies == 2
    assert app.fitness_config(Settings(hls=False)).output_copies == 1


def test_a_job_bigger_than_any_disk_is_the_jobs_problem(tmp_path: Path) -> None:
    checks = fitness(tmp_path, Disk(GIB, total=GIB))
    with pytest.raises(RetryableError) as raised:
        checks.make_room(SOURCE.model_copy(update={"duration_s": 4 * 3600.0}))
    assert raised.value.reason is Reason.SCRATCH_TOO_SMALL
    assert not isinstance(raised.value, WorkerEnvironmentError)
    assert checks.unfit is None


def test_environment_failures_in_a_row_make_the_worker_unfit(tmp_path: Path) -> None:
    checks = fitness(tmp_path, Disk(GIB))
    no_space = OSError(errno.ENOSPC, "No space left on device")
    assert checks.blames(no_space) is False  # the disk is fine again: the job's outputs?
    assert checks.blames(Stalled("stuck")) is False  # the job's own failure breaks the streak
    assert checks.blames(TimeoutError()) is False  # the network, not the environment
    assert [checks.blames(no_space) for _ in range(3)] == [False, False, True]
    assert checks.unfit is not None and checks.unfit.reason is Reason.ENVIRONMENT_FAILURES


def test_an_environment_failure_on_a_sick_disk_is_blamed_at_once(tmp_path: Path) -> None:
    disk = Disk(GIB)
    checks = fitness(tmp_path, disk)
    disk.free = 0  # something else filled the disk while the job ran
    assert checks.blames(OSError(errno.ENOSPC, "No space left on device")) is True


# ------------------------------------------------------------------------ the loop


class SickDisk(FakePipeline):
    """Fills the disk when it runs ``fill_on``; with ``fail``, that job then fails ENOSPC."""

    def __init__(self, disk: Disk, *, fill_on: str, fail: bool, behaviour: object = None) -> None:
        super().__init__(behaviour)
        self._disk, self._fill_on, self._fail = disk, fill_on, fail

    async def run(
        self,
        message: JobMessage,
        progress: Progress,
        on_source: SourceCallback,
        before_publish: PublishGuard | None = None,
    ) -> PipelineResult:
        if message.video_id == self._fill_on:
            self._disk.free = 0
            if self._fail:
                raise OSError(errno.ENOSPC, "No space left on device")
            self.behaviour = None
        return await super().run(message, progress, on_source, before_publish)


def make_worker(
    queue: FakeQueue,
    store: FakeStore,
    pipeline: PipelinePort,
    checks: Fitness,
    clock: FakeClock,
    slots: int = 1,
) -> Worker:
    config = worker_config(slots, unfit_exit_after_s=30.0)
    return Worker(
        config,
        queue,
        store,
        pipeline,
        fitness=checks,
        monotonic=clock.monotonic,
        sleep=clock.sleep,
    )


async def test_a_worker_with_a_full_scratch_never_receives_and_exits_unfit(
    tmp_path: Path,
) -> None:
    clock = FakeClock()
    queue = FakeQueue([delivery(job().model_dump_json())])
    worker = make_worker(queue, FakeStore(), FakePipeline(), fitness(tmp_path, Disk(0)), clock)
    started = clock.now
    code = await asyncio.wait_for(worker.run(asyncio.Event()), GENEROUS_S)
    assert code == EXIT_UNFIT
    assert queue.receive_sizes == []  # the message stays for a healthy worker
    assert clock.now - started >= 30.0  # /readyz said why for unfit_exit_after_s
    assert worker.unfit is not None and worker.unfit.reason is Reason.SCRATCH_FULL


async def test_a_sick_worker_spares_the_jobs_last_receive(tmp_path: Path) -> None:
    """The issue's black hole: on its last receive, a job meets a worker without room. It is
    handed back (re-sent: a fresh receive count) with the cause, never dead-lettered here."""
    message = job()
    store = FakeStore()
    store.put(record_for(message))
    queue = FakeQueue([delivery(message.model_dump_json(), receive_count=3)])
    disk = Disk(GIB)
    # The disk fills (something else wrote to it) between the receive and the probe.
    pipeline = SickDisk(disk, fill_on="v1", fail=False)
    worker = make_worker(queue, store, pipeline, fitness(tmp_path, disk), FakeClock())
    code = await asyncio.wait_for(worker.run(asyncio.Event()), GENEROUS_S)
    assert code == EXIT_UNFIT
    assert [s.label for s in worker.settled] == [Label.WORKER_UNFIT]
    assert ("release", Reason.SCRATCH_FULL) in store.calls
    assert not any(name == "mark_failed" for name, _ in store.calls)
    assert queue.calls == [("requeue", 0)]  # last receive: re-sent, visible at once
    record = store.get()
    assert record is not None and record.status is Status.QUEUED
    assert not pipeline.published


async def test_an_unfit_worker_hands_back_every_job_it_holds(tmp_path: Path) -> None:
    """Two slots: one job hangs in ffmpeg, the other fails because the disk is full."""
    first, second = job("v1"), job("v2")
    store = FakeStore()
    store.put(record_for(first))
    store.put(record_for(second))
    queue = FakeQueue(
        [
            delivery(first.model_dump_json(), message_id="m1"),
            delivery(second.model_dump_json(), message_id="m2"),
        ]
    )
    disk = Disk(GIB)
    checks = fitness(tmp_path, disk)

    worker = make_worker(
        queue,
        store,
        SickDisk(disk, fill_on="v2", fail=True, behaviour="hang"),
        checks,
        FakeClock(),
        slots=2,
    )
    code = await asyncio.wait_for(worker.run(asyncio.Event()), GENEROUS_S)
    assert code == EXIT_UNFIT
    assert sorted(s.label for s in worker.settled) == [Label.HANDED_BACK, Label.WORKER_UNFIT]
    # Both visible again at once. The hanging job's liveness may have extended its visibility
    # first: the disk check runs in a thread, and virtual time moves on while it does.
    handed_back = [call for call in queue.calls if call != ("visibility", 600)]
    assert handed_back == [("visibility", 0), ("visibility", 0)]
    for video in ("v1", "v2"):
        record = store.get(video_id=video)
        assert record is not None and record.status is Status.QUEUED
