"""One supervised liveness task per job: extend visibility, renew the lease, write progress.

It renews only while the job moves: during the encode, ffmpeg must have written a new frame within
``stall_timeout_s`` or the job is ``Stalled`` (killed and retried). Any sign that the lease is lost
ends the job at once with ``LeaseLost``; transient AWS errors are retried until the margin left on
the message's visibility runs out. A job about to outlive SQS's 12-hour cap on invisibility fails
explicitly (``ProcessingTimeout``) instead of being silently redelivered.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, NoReturn, TypeVar

from transcoder import metrics
from transcoder.errors import AwsUnavailable, LeaseLost, ProcessingTimeout, Stalled
from transcoder.logs import get_logger
from transcoder.progress import Progress
from transcoder.queue import Delivery, JobQueue
from transcoder.status import JobStore, Lease

log = get_logger(__name__)
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class LivenessConfig:
    visibility_s: int
    interval_s: float
    stall_timeout_s: float
    max_job_duration_s: float


Renewal = Callable[[], Awaitable[None]]


class Liveness:
    """Owns the renewals of one job; ``watch`` only returns by raising."""

    def __init__(
        self,
        queue: JobQueue,
        store: JobStore,
        delivery: Delivery,
        lease: Lease,
        progress: Progress,
        config: LivenessConfig,
        extra_renewals: tuple[Renewal, ...] = (),
    ) -> None:
        self._queue = queue
        self._store = store
        self._delivery = delivery
        self._lease = lease
        self._progress = progress
        self._config = config
        self._extra = extra_renewals
        self._visible_at = delivery.received_at + config.visibility_s

    async def watch(self) -> NoReturn:
        while True:
            await asyncio.sleep(self._config.interval_s)
            self._check_health()
            try:
                await self._renew()
                metrics.HEARTBEATS.labels("ok").inc()
            except AwsUnavailable as exc:
                metrics.HEARTBEATS.labels("transient").inc()
                margin_s = self._visible_at - time.monotonic()
                log.warning("liveness.renew_failed", error=str(exc), margin_s=round(margin_s, 1))
                if margin_s < self._config.interval_s:
                    raise LeaseLost("could not extend visibility before it expired") from exc
            except LeaseLost:
                metrics.HEARTBEATS.labels("lost").inc()
                raise

    def _check_health(self) -> None:
        stalled_s = self._progress.stalled_for_s()
        if stalled_s > self._config.stall_timeout_s:
            raise Stalled(
                f"ffmpeg wrote no frame for {stalled_s:.0f} s (frame {self._progress.frame})"
            )
        elapsed = time.monotonic() - self._delivery.received_at
        if elapsed + 2 * self._config.interval_s > self._config.max_job_duration_s:
            raise ProcessingTimeout(
                f"job ran {elapsed:.0f} s, reaching the {self._config.max_job_duration_s:.0f} s "
                "limit before SQS's 12-hour visibility cap"
            )

    async def _renew(self) -> None:
        now = time.monotonic()
        if self._visible_at - now < self._config.visibility_s * 2 / 3:
            await self._queue.set_visibility(self._delivery, self._config.visibility_s)
            self._visible_at = now + self._config.visibility_s
        await self._store.renew(
            self._lease, lease_s=self._config.visibility_s, progress=self._progress.percent
        )
        for renewal in self._extra:
            await renewal()


async def supervise(work: Coroutine[Any, Any, T], watcher: Coroutine[Any, Any, NoReturn]) -> T:
    """Run ``work`` under ``watcher``; if the watcher raises, ``work`` is cancelled (ffmpeg killed).

    Both tasks are always cancelled and awaited before this returns or raises.
    """
    work_task = asyncio.ensure_future(work)
    watch_task = asyncio.ensure_future(watcher)
    try:
        done, _ = await asyncio.wait({work_task, watch_task}, return_when=asyncio.FIRST_COMPLETED)
        if work_task in done:
            return work_task.result()
        work_task.cancel()
        await asyncio.gather(work_task, return_exceptions=True)
        watch_task.result()  # raises the watcher's reason
        raise AssertionError("the liveness watcher returned without a reason")
    finally:
        for task in (work_task, watch_task):
            task.cancel()
        await asyncio.gather(work_task, watch_task, return_exceptions=True)
