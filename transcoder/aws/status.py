"""The job record in DynamoDB for the worker and the operator commands: one adapter, one table.

Every write is decided by ``transcoder.domain.transitions`` and stored as the whole record with a
conditional ``PutItem``: ``rev = <the rev read>``. A refused put returns the record as it stands
(``ReturnValuesOnConditionCheckFailure``), and the transition is decided again on it: a renewal
still succeeds after an unrelated write, while a worker whose lease moved on gets ``LeaseLost``
and writes nothing. The record this process last wrote is kept, so a worker's heartbeat costs one
``PutItem`` and no read.

A write that DynamoDB applied but whose answer was lost (the SDK retries it and then sees its own
condition fail) is recognised by its ``write_id``: the record as it stands carries it, so a claim
that succeeded is this worker's lease, and a final write that succeeded is not reported as lost.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from transcoder.aws.clients import error_code, translated
from transcoder.domain import transitions
from transcoder.domain.errors import AwsUnavailable, InputRejected, LeaseLost
from transcoder.domain.job import (
    STATUS_INDEX,
    ErrorInfo,
    JobMessage,
    PartsRecord,
    Published,
    Reason,
    SourceFacts,
    Status,
    utcnow,
)
from transcoder.domain.record import JobRecord, from_item, put_condition, record_key, to_item
from transcoder.domain.record import value as attr_value
from transcoder.domain.transitions import Clock, Decision, Lease, Refusal, Verdict, Write
from transcoder.logs import get_logger

if TYPE_CHECKING:
    from types_aiobotocore_dynamodb import DynamoDBClient

log = get_logger(__name__)
CONDITION_FAILED = "ConditionalCheckFailedException"
WRITE_ATTEMPTS = 4  # re-decisions after a refused put before giving up (retryable)
Decide = Callable[[JobRecord | None], Decision]
Ids = tuple[str, str]


class JobStore:
    """Reads and transition writes of job records."""

    def __init__(
        self,
        client: DynamoDBClient,
        table: str,
        *,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._client = client
        self._table = table
        self._clock = clock
        self._known: dict[Ids, JobRecord] = {}  # what this process last read or wrote

    def now(self) -> Clock:
        return Clock(self._clock())

    async def get(self, user_id: str, video_id: str) -> JobRecord | None:
        with translated("dynamodb.get_item"):
            response = await self._client.get_item(
                TableName=self._table, Key=record_key(user_id, video_id), ConsistentRead=True
            )
        item = response.get("Item")
        record = from_item(item) if item else None
        self._remember((user_id, video_id), record)
        return record

    async def transact(
        self, ids: Ids, decide: Decide, *, read: bool = False
    ) -> JobRecord | Refusal:
        """Decide on the record as known (or read), store the write; re-decide when refused.

        A write may be decided on the record this process last knew (a refused put corrects it),
        but a refusal may not: it is decided again on a fresh read before it is returned.
        """
        fresh = read or ids not in self._known
        current = await self.get(*ids) if fresh else self._known[ids]
        for _ in range(WRITE_ATTEMPTS):
            decision = decide(current)
            if isinstance(decision, Refusal):
                if fresh:
                    return decision
                current, fresh = await self.get(*ids), True
                continue
            stored, current = await self._put(decision)
            fresh = True
            if stored:
                self._remember(ids, decision.record)
                return decision.record
            if current is not None and current.write_id == decision.record.write_id:
                self._remember(ids, current)  # our write landed; only its answer was lost
                return current
            log.debug(
                "record.write_refused",
                expected_rev=decision.expected_rev,
                rev=current.rev if current else None,
                status=current.status if current else None,
            )
            self._remember(ids, current)
        raise AwsUnavailable(f"record {ids[0]}/{ids[1]} kept changing under the write")

    def forget(self, lease: Lease) -> None:
        self._known.pop((lease.user_id, lease.video_id), None)

    # ------------------------------------------------------------ the worker's events

    async def claim(self, message: JobMessage, *, owner: str, lease_s: float) -> Lease | Refusal:
        """Take the job (read first: a claim must see the record as it stands)."""
        ids = (message.user_id, message.video_id)
        outcome = await self.transact(
            ids,
            lambda r: transitions.claim(r, message, owner, lease_s, self.now()),
            read=True,
        )
        if isinstance(outcome, Refusal):
            return outcome
        return transitions.lease_of(outcome, message.part.index if message.part else None)

    async def renew(self, lease: Lease, *, lease_s: float, progress: int) -> None:
        await self._fenced(
            lease, lambda r: transitions.renew(r, lease, lease_s, progress, self.now())
        )

    async def confirm(self, lease: Lease) -> None:
        """The publish fence: ``LeaseLost`` unless ``lease`` still owns the record;
        ``InputRejected(source_deleted)`` when the upload was deleted meanwhile."""
        await self._fenced(lease, lambda r: transitions.confirm(r, lease, self.now()))

    async def record_source(self, lease: Lease, source: SourceFacts) -> None:
        await self._fenced(lease, lambda r: transitions.record_source(r, lease, source, self.now()))

    async def mark_completed(self, lease: Lease, published: Published) -> JobRecord:
        """``COMPLETED`` with what was published; returns the record as stored."""
        return await self._final(
            lease, lambda r: transitions.complete(r, lease, published, self.now())
        )

    async def mark_failed(self, lease: Lease, error: ErrorInfo) -> JobRecord:
        """``FAILED`` with ``error``; returns the record as stored."""
        return await self._final(lease, lambda r: transitions.fail(r, lease, error, self.now()))

    async def split(self, lease: Lease, plan: PartsRecord) -> JobRecord:
        """Record the job's parts (or keep the plan already recorded); returns the record."""
        return await self._fenced(lease, lambda r: transitions.split(r, lease, plan, self.now()))

    async def fanned_out(self, lease: Lease) -> None:
        """Every part's message is sent: the job's own lease is released to its parts."""
        await self._final(lease, lambda r: transitions.fanned_out(r, lease, self.now()))

    async def part_done(self, lease: Lease) -> JobRecord:
        """The part's outputs are uploaded; the record says whether this part stitches."""
        return await self._fenced(lease, lambda r: transitions.part_done(r, lease, self.now()))

    async def release(self, lease: Lease, error: ErrorInfo | None) -> None:
        """Hand the job back (``PROCESSING -> QUEUED``), recording why when there was an error."""
        await self._final(lease, lambda r: transitions.hand_back(r, lease, error, self.now()))

    async def requeue(self, user_id: str, video_id: str, job_id: str | None) -> JobRecord | Refusal:
        """``FAILED -> QUEUED`` for an operator's retry or redrive (``transitions.retry``)."""
        return await self.transact(
            (user_id, video_id), lambda r: transitions.retry(r, job_id, self.now()), read=True
        )

    async def _fenced(self, lease: Lease, decide: Decide) -> JobRecord:
        outcome = await self.transact((lease.user_id, lease.video_id), decide)
        if isinstance(outcome, JobRecord):
            return outcome
        if outcome.verdict is Verdict.SOURCE_DELETED:
            raise InputRejected(outcome.reason, reason=Reason.SOURCE_DELETED)
        raise LeaseLost(outcome.reason)

    async def _final(self, lease: Lease, decide: Decide) -> JobRecord:
        try:
            return await self._fenced(lease, decide)
        finally:
            self.forget(lease)

    # ------------------------------------------------------------------ storage

    async def _put(self, write: Write) -> tuple[bool, JobRecord | None]:
        """One conditional put; (False, the record as it stands) when its condition failed."""
        try:
            with translated("dynamodb.put_item"):
                await self._client.put_item(
                    TableName=self._table,
                    Item=to_item(write.record),
                    **put_condition(write.expected_rev),
                )
        except ClientError as exc:
            if error_code(exc) != CONDITION_FAILED:
                raise
            item: Any = exc.response.get("Item")
            if item is None:  # not every endpoint returns it: read it
                return False, await self.get(write.record.user_id, write.record.video_id)
            return False, from_item(item)
        return True, write.record

    def _remember(self, ids: Ids, record: JobRecord | None) -> None:
        """Keep the newest record seen: a read answered after a later write must not undo it."""
        known = self._known.get(ids)
        if record is None:
            self._known.pop(ids, None)
        elif known is None or record.rev >= known.rev:
            self._known[ids] = record

    async def list_by_status(
        self, status: Status, *, updated_before: str | None = None, limit: int = 100
    ) -> list[JobRecord]:
        """Records in ``status`` (oldest first), through the status index."""
        condition = "#status = :status"
        values = {":status": attr_value(status.value)}
        if updated_before:
            condition += " AND updated_at < :before"
            values[":before"] = attr_value(updated_before)
        items: list[JobRecord] = []
        kwargs: dict[str, Any] = {}
        while len(items) < limit:
            with translated("dynamodb.query"):
                response = await self._client.query(
                    TableName=self._table,
                    IndexName=STATUS_INDEX,
                    KeyConditionExpression=condition,
                    ExpressionAttributeNames={"#status": "status"},
                    ExpressionAttributeValues=values,
                    Limit=limit - len(items),
                    **kwargs,
                )
            items.extend(from_item(item) for item in response.get("Items", []))
            if "LastEvaluatedKey" not in response:
                break
            kwargs["ExclusiveStartKey"] = response["LastEvaluatedKey"]
        return items
