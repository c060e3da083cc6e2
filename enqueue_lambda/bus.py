"""Job events on EventBridge for the Lambdas (boto3): the same events the worker sends.

The enqueue Lambda (a rejected upload, ``source_deleted``) and the dead-letter handler
(``retries_exhausted``, ``invalid_message``) end jobs themselves; after each such write succeeds
they call ``publish`` with the record it stored. The event is built by
``transcoder.domain.event.job_event``; sending is retried with doubling back-off, entries that
``PutEvents`` refused (``FailedEntryCount``, ``Entries[].ErrorCode``) included, within
``deadline_s``. ``publish`` never raises: a record's write is done and must not be undone or retried
because its announcement failed; an event that could not be sent is logged as
``event.publish_failed`` with the job id (a CloudWatch Logs metric filter can count them).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from enqueue_lambda.jsonlog import emit, get_logger
from transcoder.domain.event import job_event, refused_entries, retry_delay_s
from transcoder.domain.record import JobRecord

log = get_logger("enqueue_lambda.bus")
# Short socket timeouts: a Lambda has a minute for its whole batch, events are a side effect.
CLIENT_CONFIG = Config(
    retries={"mode": "standard", "max_attempts": 3}, connect_timeout=2, read_timeout=5
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
        deadline_s: float = 10.0,
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

    def publish(self, record: JobRecord) -> bool:
        """Announce ``record``'s end; True when sent (or nothing to send). Never raises."""
        fields = {"job_id": record.job_id, "video_id": record.video_id, "bus": self.bus}
        event_id = None
        try:
            event = job_event(record)
            if event is None:
                return True
            event_id = event.detail.event_id
            error = self._send([event.entry(self.bus)])
        except Exception as exc:  # whatever happens here, the record's write stands
            error = repr(exc)
        if error:
            emit(log, logging.ERROR, "event.publish_failed", error=error, **fields)
            return False
        emit(log, logging.INFO, "event.published", event_id=event_id, **fields)
        return True

    def _send(self, pending: list[Mapping[str, Any]]) -> str:
        """Send, re-sending refused entries; "" when all were accepted, else the last error."""
        give_up_at = self._monotonic() + self._deadline_s
        last = ""
        for attempt in range(self._attempts):
            if attempt:
                delay = retry_delay_s(attempt - 1, self._backoff_s)
                if self._monotonic() + delay > give_up_at:
                    return f"{last} (gave up after {attempt} tries: {self._deadline_s:g} s bound)"
                emit(log, logging.WARNING, "event.publish_retry", attempt=attempt, error=last)
                self._sleep(delay)
            try:
                response = self._client.put_events(Entries=pending)
            except (ClientError, BotoCoreError) as exc:
                last = str(exc)
                continue
            refused = refused_entries(pending, response)
            if not refused:
                return ""
            pending = [entry for entry, _ in refused]
            last = "PutEvents refused the entry: " + ", ".join(code for _, code in refused)
        return last


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
