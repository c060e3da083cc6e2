"""Job events on EventBridge for the Lambdas (boto3): the same events the worker sends.

The enqueue Lambda (a rejected upload, ``source_deleted``) and the dead-letter handler
(``retries_exhausted``, ``invalid_message``) end jobs themselves. Each collects the records its
writes stored during one invocation and, once every record of the event is handled, calls
``publish`` once: the events (``transcoder.domain.event.job_event``) go out in ``PutEvents`` calls
of up to 10 entries, retried with doubling back-off, entries the answer refused
(``FailedEntryCount``, ``Entries[].ErrorCode``) included, all within ``deadline_s`` for the whole
invocation, so a struggling bus cannot run a batch into the function's timeout. ``publish`` never
raises: the writes are done and must not be undone or retried because their announcement failed;
an event that could not be sent is logged as ``event.publish_failed`` with the job id (the
template's metric filter counts them).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from enqueue_lambda.jsonlog import emit, get_logger
from transcoder.domain.event import (
    MAX_ENTRIES,
    JobEvent,
    job_event,
    refused_entries,
    retry_delay_s,
)
from transcoder.domain.record import JobRecord

log = get_logger("enqueue_lambda.bus")
# Short socket timeouts and one SDK retry: one call stays within a few seconds, and the
# publisher's own deadline bounds the rest.
CLIENT_CONFIG = Config(
    retries={"mode": "standard", "total_max_attempts": 2}, connect_timeout=2, read_timeout=3
)


class PutEventsClient(Protocol):
    """The one call this adapter makes (boto3's ``events`` client)."""

    def put_events(self, *, Entries: Sequence[Mapping[str, Any]]) -> Any: ...


class EventBus:
    """Puts job events on one bus (``bus``: a name or an ARN)."""

    def __init__(
        self,
        client: PutEventsClient,
        bus: str,
        *,
        attempts: int = 4,
        backoff_s: float = 0.2,
        deadline_s: float = 8.0,
        sleep: Callable[[float], None] = time.sleep,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self.bus = bus
        self._attempts = attempts
        self._backoff_s = backoff_s
        self._deadline_s = deadline_s
        self._sleep = sleep
        self._monotonic = monotonic

    def publish(self, records: Sequence[JobRecord]) -> int:
        """Announce each record's end; returns how many events were not sent. Never raises."""
        give_up_at = self._monotonic() + self._deadline_s
        events: list[tuple[JobRecord, JobEvent]] = []
        failed = 0
        for record in records:
            try:
                event = job_event(record)
            except ValueError as exc:  # a record no event can describe: a bug, logged
                failed += self._failed(record, repr(exc))
                continue
            if event is not None:
                events.append((record, event))
        for start in range(0, len(events), MAX_ENTRIES):
            chunk = events[start : start + MAX_ENTRIES]
            try:
                unsent, error = self._send([e.entry(self.bus) for _, e in chunk], give_up_at)
            except Exception as exc:  # whatever happens here, the records' writes stand
                unsent, error = set(range(len(chunk))), repr(exc)
            for index, (record, event) in enumerate(chunk):
                if index in unsent:
                    failed += self._failed(record, error)
                else:
                    fields = {"job_id": record.job_id, "event_id": event.detail.event_id}
                    emit(log, logging.INFO, "event.published", **fields)
        return failed

    def _failed(self, record: JobRecord, error: str) -> int:
        fields = {"job_id": record.job_id, "video_id": record.video_id, "bus": self.bus}
        emit(log, logging.ERROR, "event.publish_failed", error=error, **fields)
        return 1

    def _send(self, entries: list[dict[str, Any]], give_up_at: float) -> tuple[set[int], str]:
        """Send, re-sending refused entries: (indices never accepted, the last error)."""
        pending = list(range(len(entries)))
        last = ""
        for attempt in range(self._attempts):
            if attempt:
                delay = retry_delay_s(attempt - 1, self._backoff_s)
                if self._monotonic() + delay > give_up_at:
                    return set(pending), f"{last} (gave up after {attempt} tries: deadline)"
                emit(log, logging.WARNING, "event.publish_retry", attempt=attempt, error=last)
                self._sleep(delay)
            sent = [entries[i] for i in pending]
            try:
                response = self._client.put_events(Entries=sent)
            except (ClientError, BotoCoreError) as exc:
                last = str(exc)
                continue
            refused = refused_entries(sent, response)
            if not refused:
                return set(), ""
            refused_ids = {id(entry) for entry, _ in refused}
            pending = [i for i in pending if id(entries[i]) in refused_ids]
            last = "PutEvents refused: " + ", ".join(code for _, code in refused)
        return set(pending), last


def build(
    bus: str | None, *, endpoint_url: str | None = None, region: str | None = None
) -> EventBus | None:
    """The publisher for ``TRANSCODER_EVENT_BUS``, or None when events are off."""
    if not bus:
        return None
    import boto3

    config = CLIENT_CONFIG.merge(Config(region_name=region))
    client: Any = boto3.client("events", endpoint_url=endpoint_url, config=config)
    return EventBus(client, bus)
