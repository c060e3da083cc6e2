"""The Lambdas' side of the job record (boto3's low-level DynamoDB client, synchronous).

Every write is decided by ``transcoder.domain.transitions`` (the same rules the worker and the
operator commands use) and stored as the whole record on condition that ``rev`` is the one read;
a refused put returns the record as it stands, and the event is decided again on it. A write whose
answer was lost is recognised by its ``write_id``. One record per video (``pk = USER#{userId}``,
``sk = VIDEO#{videoId}``) describes its latest upload.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from transcoder.domain import transitions
from transcoder.domain.job import ErrorInfo, JobMessage, utcnow
from transcoder.domain.record import JobRecord, from_item, put_condition, record_key, to_item
from transcoder.domain.transitions import Clock, Decision, Refusal, Verdict

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

CONDITION_FAILED = "ConditionalCheckFailedException"
WRITE_ATTEMPTS = 4
Decide = Callable[[JobRecord | None], Decision]


class RecordChanging(RuntimeError):
    """The record kept changing under our writes; the event is retried (transient)."""


class RecordTable:
    """Reads and transition writes of job records for the Lambdas."""

    def __init__(
        self,
        dynamodb: DynamoDBClient,
        table: str,
        *,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._dynamodb = dynamodb
        self._table = table
        self._clock = clock

    def now(self) -> Clock:
        return Clock(self._clock())

    def get(self, user_id: str, video_id: str) -> JobRecord | None:
        item = self._dynamodb.get_item(
            TableName=self._table, Key=record_key(user_id, video_id), ConsistentRead=True
        ).get("Item")
        return from_item(item) if item else None

    def transact(self, user_id: str, video_id: str, decide: Decide) -> JobRecord | Refusal:
        """Read, decide, write; decide again on the record as it stands when the put is refused."""
        current = self.get(user_id, video_id)
        for _ in range(WRITE_ATTEMPTS):
            decision = decide(current)
            if isinstance(decision, Refusal):
                return decision
            stored, current = self._put(decision.record, decision.expected_rev)
            if stored or (current is not None and current.write_id == decision.record.write_id):
                return decision.record if stored else current or decision.record
        raise RecordChanging(f"record {user_id}/{video_id} kept changing under the write")

    def _put(self, record: JobRecord, expected_rev: int | None) -> tuple[bool, JobRecord | None]:
        try:
            self._dynamodb.put_item(
                TableName=self._table, Item=to_item(record), **put_condition(expected_rev)
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != CONDITION_FAILED:
                raise
            item: Any = exc.response.get("Item")
            return False, from_item(item) if item else self.get(record.user_id, record.video_id)
        return True, record


class RecordWriter:
    """The enqueue Lambda's events: an upload seen (or rejected), a message sent, a delete."""

    def __init__(self, dynamodb: DynamoDBClient, table: str) -> None:
        self.table = RecordTable(dynamodb, table)

    def place(
        self, message: JobMessage, size_bytes: int, rejection: ErrorInfo | None = None
    ) -> JobRecord | Refusal:
        """Record the upload (``QUEUED``, or ``FAILED`` when rejected), or say why not."""
        return self.table.transact(
            message.user_id,
            message.video_id,
            lambda current: transitions.upload_seen(
                current, message, self.table.now(), size_bytes=size_bytes, rejection=rejection
            ),
        )

    def mark_enqueued(self, message: JobMessage, message_id: str) -> None:
        self.table.transact(
            message.user_id,
            message.video_id,
            lambda current: transitions.enqueued(
                current, message.job_id, message_id, self.table.now()
            ),
        )

    def deleted(
        self, user_id: str, video_id: str, key: str, sequencer: str | None
    ) -> JobRecord | Refusal:
        return self.table.transact(
            user_id,
            video_id,
            lambda current: transitions.upload_deleted(current, key, sequencer, self.table.now()),
        )


def sends_message(outcome: JobRecord | Refusal) -> bool:
    """A placed record's message is sent, and so is a held or unconfirmed one's."""
    if isinstance(outcome, JobRecord):
        return outcome.error is None
    return outcome.verdict in (Verdict.HELD, Verdict.RESEND)
