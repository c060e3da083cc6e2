"""One supervised liveness task per job: extend visibility, renew the lease, write progress.

Every ``interval_s`` it checks, in this order:

1. we still own the job: the message's visibility and the DynamoDB lease, as last renewed, have
   not run out (a worker resumed after a pause, or one that could not renew in time, must assume
   that another worker has the job now, and write nothing);
2. the job moves: during the encode, ffmpeg must have written a new frame within
   ``stall_timeout_s`` or the job is ``Stalled`` (killed, retried with backoff);
3. the job is inside ``max_job_duration_s``, which stays below SQS's 12-hour cap on a message's
   total invisibility: past it the job fails explicitly (``ProcessingTimeout``) instead of being
   silently redelivered to a second worker while the first still runs;

then renews: visibility (when less than two thirds of it is left), the lease (to expire with the
visibility, so a dead holder's lease has lapsed by the time its message reappears) together with
the progress, and the extra renewals (ECS task scale-in protection). Any sign that the lease is
lost (``LeaseLost`` from the adapters: a refused receipt handle, a failed conditional renew) ends
the job at once; transient failures (``AwsUnavailable``, a call hanging past the margin) are
retried sooner, for as long as the margin left on the visibility and the lease allows.
``watch`` only returns by raising; ``supervise`` turns that into killing ffmpeg.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, NoReturn, TypeVar

from transcoder import metrics
from transcoder.aws.queue import Delivery
from transcoder.domain.errors import AwsUnavailable, LeaseLost, ProcessingTimeout, Stalled
from transcoder.domain.transitions import Lease
from transcoder.logs import get_logger
from transcoder.media.progress import Progress
from transcoder.runtime.ports import JobQueuePort, JobStorePort, Monotonic, Sleep

log = get_logger(__name__)
T = TypeVar("T")
# The lease ends this long before the visibility, so a reappearing message finds it lapsed.
LEASE_SKEW_S = 1.0
MIN_RETRY_S = 0.25  # the shortest wait before retrying a renewal, and the smallest usable margin


@dataclass(frozen=True, slots=True)
class LivenessConfig:
    visibility_s: int
    interval_s: float
    stall_timeout_s: float
    max_job_duration_s: float


Renewal = Callable[[], Awaitable[None]]


def lease_horizon_s(delivery: Delivery, visibility_s: float, now: float) -> float:
    """Seconds the lease should last from ``now``: until just before the message reappears."""
    return delivery.received_at + visibility_s - now - LEASE_SKEW_S


def _stop_if_cancelled() -> None:
    """Raise if this task was asked to stop, even if the request was swallowed on the way.

    On Python 3.11 ``asyncio.wait_for`` returns the result instead of raising when it is cancelled
    just as its inner call finishes. The renewal used to run under ``wait_for``: the watch loop
    then carried on renewing a finished job's lease, and ``supervise`` waited on it, so the job did
    not settle. The renewal now runs under ``asyncio.timeout``; this check also covers any library
    below it that swallows a cancellation. ``Task.cancelling()`` still counts the request.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


class Liveness:
    """Owns the renewals of one job; ``watch`` only returns by raising."""

    def __init__(
        self,
        queue: JobQueuePort,
        store: JobStorePort,
        delivery: Delivery,
        lease: Lease,
        progress: Progress,
        config: LivenessConfig,
        extra_renewals: tuple[Renewal, ...] = (),
        *,
        monotonic: Monotonic = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self._queue = queue
        self._store = store
        self._delivery = delivery
        self._lease = lease
        self._progress = progress
        self._config = config
        self._extra = extra_renewals
        self._monotonic = monotonic
        self._sleep = sleep
        # Monotonic deadlines of what we last secured; the claim set the lease to the first one.
        self._visible_at = delivery.received_at + config.visibility_s
        self._lease_until = self._visible_at - LEASE_SKEW_S

    async def watch(self) -> NoReturn:
        delay = self._config.interval_s
        while True:
            await self._sleep(delay)
            self._check_ownership()  # first: a job we may no longer own must write nothing
            self._check_health()
            delay = await self._renew_within_margin()
            _stop_if_cancelled()

    def margin_s(self) -> float:
        """Seconds until our visibility or our lease, as last renewed, runs out."""
        return min(self._visible_at, self._lease_until) - self._monotonic()

    def _check_health(self) -> None:
        stalled_s = self._progress.stalled_for_s()
        if stalled_s > self._config.stall_timeout_s:
            raise Stalled(
                f"ffmpeg wrote no frame for {stalled_s:.0f} s (frame {self._progress.frame})"
            )
        elapsed = self._monotonic() - self._delivery.received_at
        if elapsed + 2 * self._config.interval_s > self._config.max_job_duration_s:
            raise ProcessingTimeout(
                f"job ran {elapsed:.0f} s, reaching the {self._config.max_job_duration_s:.0f} s "
                "limit before SQS's 12-hour visibility cap"
            )

    def _check_ownership(self) -> None:
        margin_s = self.margin_s()
        if margin_s < MIN_RETRY_S:
            metrics.HEARTBEATS.labels("lost").inc()
            raise LeaseLost(
                f"visibility or lease ran out {-margin_s:.1f} s ago without a renewal: "
                "another worker may own the job"
            )

    async def _renew_within_margin(self) -> float:
        """Renew once; the delay until the next tick (shorter after a transient failure)."""
        margin_s = self.margin_s()
        try:
            async with asyncio.timeout(margin_s):  # unlike wait_for, never eats a cancel
                await self._renew()
        except LeaseLost:
            metrics.HEARTBEATS.labels("lost").inc()
            raise
        except (AwsUnavailable, TimeoutError) as exc:
            metrics.HEARTBEATS.labels("transient").inc()
            margin_s = self.margin_s()
            retry_in_s = min(self._config.interval_s, max(MIN_RETRY_S, margin_s / 4))
            log.warning(
                "liveness.renew_failed",
                error=str(exc) or type(exc).__name__,
                margin_s=round(margin_s, 1),
                retry_in_s=round(retry_in_s, 2),
            )
            return retry_in_s
        metrics.HEARTBEATS.labels("ok").inc()
        return self._config.interval_s

    async def _renew(self) -> None:
        now = self._monotonic()
        if self._visible_at - now < self._config.visibility_s * 2 / 3:
            await self._queue.set_visibility(self._delivery, self._config.visibility_s)
            self._visible_at = now + self._config.visibility_s
        lease_s = self._visible_at - now - LEASE_SKEW_S
        await self._store.renew(self._lease, lease_s=lease_s, progress=self._progress.percent)
        self._lease_until = now + lease_s
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
