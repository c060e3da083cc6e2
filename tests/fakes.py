"""Type-checked fakes of the runtime's ports (``transcoder.runtime.ports``), for unit tests.

Each fake implements its protocol (mypy checks it wherever a fake is passed as a port) and records
what it was asked. ``FakeStore`` is not a stub: it keeps real ``JobRecord``s and applies the real
transitions, so a test sees the same refusals the DynamoDB adapter would produce. ``FakeClock``
replaces ``time.monotonic`` and ``asyncio.sleep`` so liveness and shutdown run without real waits.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from transcoder.aws.queue import Delivery
from transcoder.aws.storage import ObjectInfo, Uploaded
from transcoder.domain import transitions
from transcoder.domain.errors import InputRejected, LeaseLost
from transcoder.domain.job import (
    ErrorInfo,
    JobMessage,
    PartsRecord,
    Published,
    RawKey,
    Reason,
    RenditionRecord,
    RenditionStatus,
    SourceFacts,
)
from transcoder.domain.record import JobRecord
from transcoder.domain.transitions import Clock, Decision, Lease, Refusal, Verdict
from transcoder.media.progress import Progress
from transcoder.runtime.decision import RetryPolicy
from transcoder.runtime.liveness import LivenessConfig
from transcoder.runtime.pipeline import PipelineResult, PublishGuard, SourceCallback
from transcoder.runtime.worker import WorkerConfig

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
    published=Published(
        renditions={"720p": RenditionRecord(status=RenditionStatus.COMPLETED, key="k")}
    ),
)
BUCKET = "media"
POLICY = RetryPolicy(
    max_receive_count=3,
    visibility_s=600,
    retry_base_s=30,
    retry_max_s=900,
    defer_base_s=5,
    defer_max_s=120,
)


def job(video: str = "v1", user: str = "u1", **overrides: Any) -> JobMessage:
    message = JobMessage.for_object(
        bucket=BUCKET,
        key=f"raw/{user}/{video}.mp4",
        raw=RawKey(user, video, "mp4"),
        etag="e",
        version_id=None,
        trace_id="t",
    )
    return message.model_copy(update=overrides) if overrides else message


def delivery(
    body: str, receive_count: int = 1, message_id: str = "m1", received_at: float | None = None
) -> Delivery:
    at = time.monotonic() if received_at is None else received_at
    return Delivery(message_id, f"rh-{message_id}", body, receive_count, at)


class FakeClock:
    """Virtual time: ``sleep`` returns at once in wall time, and the clock jumps to the earliest
    sleeper's wake-up, so concurrent sleepers see one consistent timeline."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self._waking: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    async def sleep(self, seconds: float) -> None:
        target = self.now + max(seconds, 0.0)
        self._waking.append(target)
        try:
            while self.now < target:
                await asyncio.sleep(0)  # first let every runnable task reach its own sleep
                if self.now < target <= min(self._waking):
                    self.now = target  # nobody wakes earlier: time moves on to us
        finally:
            self._waking.remove(target)
        await asyncio.sleep(0)  # let other tasks run; no wall-clock wait


@dataclass
class FakeQueue:
    """``JobQueuePort``: an inbox, and a log of every action taken on a delivery."""

    inbox: list[Delivery] = field(default_factory=list)
    calls: list[tuple[str, Any]] = field(default_factory=list)
    receive_sizes: list[int] = field(default_factory=list)
    failures: dict[str, list[Exception]] = field(default_factory=dict)

    async def _call(self, name: str, value: Any = None) -> None:
        self.calls.append((name, value))
        pending = self.failures.get(name)
        if pending:
            raise pending.pop(0)

    async def receive(self, max_messages: int, *, wait_s: int, visibility_s: int) -> list[Delivery]:
        self.receive_sizes.append(max_messages)
        taken, self.inbox = self.inbox[:max_messages], self.inbox[max_messages:]
        if not taken:
            await asyncio.sleep(0.01)
        return taken

    async def delete(self, delivery: Delivery) -> None:
        await self._call("delete", delivery.message_id)

    async def set_visibility(self, delivery: Delivery, seconds: int) -> None:
        await self._call("visibility", seconds)

    async def requeue(self, delivery: Delivery, *, delay_s: int = 0) -> str:
        await self._call("requeue", delay_s)
        return f"{delivery.message_id}-again"

    async def dead_letter(self, delivery: Delivery, *, reason: str, detail: str) -> None:
        await self._call("dead_letter", reason)

    async def send(self, body: str, *, delay_s: int = 0) -> str:
        await self._call("send", body)
        return f"sent-{len(self.calls)}"


@dataclass
class FakeStore:
    """``JobStorePort`` over in-memory ``JobRecord``s, written through the real transitions.

    ``lose_lease_on`` makes that write find the lease taken over (as if another worker claimed);
    ``failures`` raises the given exceptions before the named call does anything.
    """

    records: dict[tuple[str, str], JobRecord] = field(default_factory=dict)
    calls: list[tuple[str, Any]] = field(default_factory=list)
    lose_lease_on: str | None = None
    failures: dict[str, list[Exception]] = field(default_factory=dict)
    epoch_s: Callable[[], float] = time.time

    def clock(self) -> Clock:
        return Clock(datetime.fromtimestamp(self.epoch_s(), tz=UTC))

    def put(self, record: JobRecord) -> None:
        self.records[(record.user_id, record.video_id)] = record

    def get(self, user_id: str = "u1", video_id: str = "v1") -> JobRecord | None:
        return self.records.get((user_id, video_id))

    def _apply(self, name: str, ids: tuple[str, str], decide: Callable[..., Decision]) -> Decision:
        pending = self.failures.get(name)
        if pending:
            raise pending.pop(0)
        if self.lose_lease_on == name:
            raise LeaseLost("taken over by another attempt")
        decision = decide(self.records.get(ids))
        if isinstance(decision, transitions.Write):
            self.records[ids] = decision.record
        return decision

    async def _fenced(
        self, name: str, lease: Lease, value: Any, decide: Callable[..., Decision]
    ) -> JobRecord:
        decision = self._apply(name, (lease.user_id, lease.video_id), decide)
        if isinstance(decision, Refusal):
            if decision.verdict is Verdict.SOURCE_DELETED:
                raise InputRejected(decision.reason, reason=Reason.SOURCE_DELETED)
            raise LeaseLost(decision.reason)
        self.calls.append((name, value))
        return decision.record

    async def claim(self, message: JobMessage, *, owner: str, lease_s: float) -> Lease | Refusal:
        ids = (message.user_id, message.video_id)
        decision = self._apply(
            "claim", ids, lambda r: transitions.claim(r, message, owner, lease_s, self.clock())
        )
        if isinstance(decision, Refusal):
            return decision
        self.calls.append(("claim", owner))
        return transitions.lease_of(decision.record, message.part.index if message.part else None)

    async def renew(self, lease: Lease, *, lease_s: float, progress: int) -> None:
        await self._fenced(
            "renew",
            lease,
            progress,
            lambda r: transitions.renew(r, lease, lease_s, progress, self.clock()),
        )

    async def confirm(self, lease: Lease) -> None:
        await self._fenced(
            "confirm", lease, None, lambda r: transitions.confirm(r, lease, self.clock())
        )

    async def record_source(self, lease: Lease, source: SourceFacts) -> None:
        await self._fenced(
            "record_source",
            lease,
            source.width,
            lambda r: transitions.record_source(r, lease, source, self.clock()),
        )

    async def mark_completed(self, lease: Lease, published: Published) -> JobRecord:
        return await self._fenced(
            "mark_completed",
            lease,
            sorted(published.renditions),
            lambda r: transitions.complete(r, lease, published, self.clock()),
        )

    async def mark_failed(self, lease: Lease, error: ErrorInfo) -> JobRecord:
        return await self._fenced(
            "mark_failed",
            lease,
            error.code,
            lambda r: transitions.fail(r, lease, error, self.clock()),
        )

    async def release(self, lease: Lease, error: ErrorInfo | None) -> None:
        await self._fenced(
            "release",
            lease,
            error.code if error else None,
            lambda r: transitions.hand_back(r, lease, error, self.clock()),
        )

    async def split(self, lease: Lease, plan: PartsRecord) -> JobRecord:
        return await self._fenced(
            "split",
            lease,
            len(plan.states),
            lambda r: transitions.split(r, lease, plan, self.clock()),
        )

    async def fanned_out(self, lease: Lease) -> None:
        await self._fenced(
            "fanned_out", lease, None, lambda r: transitions.fanned_out(r, lease, self.clock())
        )

    async def part_done(self, lease: Lease) -> JobRecord:
        return await self._fenced(
            "part_done", lease, lease.part, lambda r: transitions.part_done(r, lease, self.clock())
        )


@dataclass
class FakeEvents:
    """``EventsPort``: the records announced, each with the queue actions taken before it."""

    queue: FakeQueue | None = None
    published: list[tuple[JobRecord, list[tuple[str, Any]]]] = field(default_factory=list)

    async def publish(self, record: JobRecord) -> bool:
        before = list(self.queue.calls) if self.queue is not None else []
        self.published.append((record, before))
        return True


@dataclass
class FakePipeline:
    """The pipeline: succeed, raise ``behaviour``, or ``"hang"`` (in transcode, never finishing)."""

    behaviour: Any = None
    runs: int = 0
    published: bool = False
    hang_s: float = 3600.0

    async def run(
        self,
        message: JobMessage,
        progress: Progress,
        on_source: SourceCallback,
        before_publish: PublishGuard | None = None,
    ) -> PipelineResult:
        self.runs += 1
        await on_source(SOURCE)
        if self.behaviour == "hang":
            progress.enter("transcode")
            await asyncio.sleep(self.hang_s)
        if isinstance(self.behaviour, BaseException):
            raise self.behaviour
        if before_publish is not None:
            await before_publish()
        self.published = True
        return RESULT

    async def run_part(
        self, message: JobMessage, progress: Progress, before_publish: PublishGuard | None = None
    ) -> list[str]:
        """A part: ``behaviour`` as for ``run``; its (unwritten) work key on success."""
        self.runs += 1
        if isinstance(self.behaviour, BaseException):
            raise self.behaviour
        if before_publish is not None:
            await before_publish()
        return [f"work/{message.job_id}/{message.part.index if message.part else 0}"]

    async def stitch(
        self,
        message: JobMessage,
        parts: PartsRecord,
        progress: Progress,
        before_publish: PublishGuard | None = None,
    ) -> PipelineResult:
        if before_publish is not None:
            await before_publish()
        self.published = True
        return RESULT


@dataclass
class FakeProtection:
    """``ProtectionPort``: grants or refuses scale-in protection; counts the calls."""

    grant: bool = True
    protected: bool = False
    calls: list[str] = field(default_factory=list)

    async def acquire(self) -> bool:
        self.calls.append("acquire")
        self.protected = self.grant
        return self.grant

    async def renew(self) -> None:
        self.calls.append("renew")

    async def release(self) -> None:
        self.calls.append("release")
        self.protected = False


@dataclass
class FakeStorage:
    """``StoragePort``: objects by key; ``head`` of a missing key is ``source_not_found``."""

    objects: dict[str, bytes] = field(default_factory=dict)
    content_types: dict[str, str] = field(default_factory=dict)
    uploads: list[str] = field(default_factory=list)  # keys in upload order

    async def head(self, key: str, *, version_id: str | None = None) -> ObjectInfo:
        if key not in self.objects:
            raise InputRejected(f"{key} does not exist", reason=Reason.SOURCE_NOT_FOUND)
        return ObjectInfo(size_bytes=len(self.objects[key]), etag="e", version_id=version_id)

    async def read_range(
        self,
        key: str,
        start: int,
        end: int,
        *,
        version_id: str | None = None,
        if_match: str | None = None,
    ) -> bytes:
        return self.objects[key][start : end + 1]

    async def presign_get(self, key: str, *, ttl_s: int, version_id: str | None = None) -> str:
        return f"http://127.0.0.1:1/{key}"

    async def upload(self, path: Path, key: str, *, content_type: str = "video/mp4") -> Uploaded:
        self.objects[key] = path.read_bytes()
        self.content_types[key] = content_type
        self.uploads.append(key)
        return Uploaded(
            key=key, size_bytes=len(self.objects[key]), etag="e", parts=1, checksum_crc32=""
        )

    async def list_keys(self, prefix: str) -> list[str]:
        return sorted(key for key in self.objects if key.startswith(prefix))

    async def delete(self, keys: list[str]) -> None:
        for key in keys:
            self.objects.pop(key, None)

    async def download(self, key: str, path: Path) -> int:
        path.write_bytes(self.objects[key])
        return len(self.objects[key])


def record_for(message: JobMessage, **changes: Any) -> JobRecord:
    """The record the enqueue Lambda writes for ``message``, with ``changes``."""
    clock = Clock(datetime.now(UTC) - timedelta(seconds=1))
    placed = transitions.upload_seen(None, message, clock, size_bytes=1)
    assert isinstance(placed, transitions.Write)
    return placed.record.model_copy(update=changes)


def worker_config(slots: int = 1, **overrides: Any) -> WorkerConfig:
    """The worker settings the loop's unit tests share (600 s visibility, 60 s heartbeat)."""
    config = WorkerConfig(
        slots=slots,
        wait_time_s=0,
        visibility_s=600,
        shutdown_grace_s=5,
        worker_id="w1",
        bucket=BUCKET,
        policy=POLICY,
        liveness=LivenessConfig(
            visibility_s=600, interval_s=60, stall_timeout_s=120, max_job_duration_s=3600
        ),
    )
    return dataclasses.replace(config, **overrides)
