"""Job events on EventBridge for the worker (aiobotocore): ``EventBus.publish(record)``.

The settler calls ``publish`` with the record its final write stored, after that write (and the
queue action) succeeded; the event is built by ``transcoder.domain.event.job_event``. Sending is
retried with doubling back-off, the whole call (SDK retries included) bounded by ``timeout_s``, and
so are entries that ``PutEvents`` answered with an ``ErrorCode`` (a partial failure is an HTTP 200).
``publish`` never raises: an event that could not be sent is counted in
``transcoder_events_total{result="failed"}`` and logged as ``event.publish_failed``; the job is
settled either way.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Protocol

from transcoder import metrics
from transcoder.aws.clients import translated
from transcoder.domain.errors import AwsUnavailable
from transcoder.domain.event import JobEvent, job_event, refused_entries, retry_delay_s
from transcoder.domain.record import JobRecord
from transcoder.logs import get_logger

log = get_logger(__name__)


class PutEventsClient(Protocol):
    """The one call this adapter makes (aiobotocore's ``events`` client)."""

    def put_events(self, *, Entries: Sequence[Mapping[str, Any]]) -> Awaitable[Any]: ...


class EventNotSent(AwsUnavailable):
    """Every try was refused; the last refusal is the message."""


class EventBus:
    """Puts job events on one bus (``bus``: a name or an ARN)."""

    def __init__(
        self,
        client: PutEventsClient,
        bus: str,
        *,
        timeout_s: float = 10.0,
        attempts: int = 5,
        backoff_s: float = 0.2,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._client = client
        self.bus = bus
        self._timeout_s = timeout_s
        self._attempts = attempts
        self._backoff_s = backoff_s
        self._sleep = sleep

    async def publish(self, record: JobRecord) -> bool:
        """Announce ``record``'s end; True when sent (or nothing to send). Never raises."""
        try:
            event = job_event(record)
        except ValueError as exc:  # a record no event can describe: a bug, never the job's fault
            return self._failed(record, "?", str(exc))
        if event is None:
            return True
        try:
            async with asyncio.timeout(self._timeout_s):
                await self._send(event)
        except TimeoutError:
            return self._failed(record, event.detail_type, f"not sent within {self._timeout_s:g} s")
        except Exception as exc:  # whatever happens here, the job stays settled
            return self._failed(record, event.detail_type, str(exc) or repr(exc))
        metrics.EVENTS.labels(event.detail_type, "published").inc()
        log.info("event.published", detail_type=event.detail_type, event_id=event.detail.event_id)
        return True

    def _failed(self, record: JobRecord, detail_type: str, error: str) -> bool:
        metrics.EVENTS.labels(detail_type, "failed").inc()
        log.error(
            "event.publish_failed",
            job_id=record.job_id,
            video_id=record.video_id,
            detail_type=detail_type,
            bus=self.bus,
            error=error,
        )
        return False

    async def _send(self, event: JobEvent) -> None:
        pending: list[Mapping[str, Any]] = [event.entry(self.bus)]
        last = ""
        for attempt in range(self._attempts):
            if attempt:
                log.warning("event.publish_retry", attempt=attempt, error=last)
                await self._sleep(retry_delay_s(attempt - 1, self._backoff_s))
            try:
                with translated("events.put_events"):
                    response = await self._client.put_events(Entries=pending)
            except AwsUnavailable as exc:  # AwsError included: AccessDenied may be IAM lag
                last = str(exc)
                continue
            refused = refused_entries(pending, response)
            if not refused:
                return
            pending = [entry for entry, _ in refused]
            last = "PutEvents refused the entry: " + ", ".join(code for _, code in refused)
        raise EventNotSent(last)
