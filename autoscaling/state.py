"""How long the queue has been empty: the one piece of state the sampler keeps between runs.

The sampler runs in Lambda (a fresh container may serve any invocation) and in the CLI loop, so the
state cannot live in process memory. It lives in the jobs table as one item,
``pk = "SCALER"``, ``sk = "QUEUE#<queue name>"``, with ``empty_since`` and ``sampled_at`` (epoch
seconds). Why the table: it already exists and the fleet already depends on it; one
``UpdateItem`` per sample both reads and writes the state atomically (``if_not_exists`` keeps the
first empty sample's time, concurrent samplers agree); it is strongly consistent, unlike a
CloudWatch metric history read back seconds after it was written; and it costs about 1,440
writes a day. The item has no ``status`` attribute, so the status index never sees it.

If samples stop for longer than ``max_gap_s``, the sampler did not watch the queue in between and
the empty period restarts: scale to zero is delayed, never hastened.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

STATE_PK = "SCALER"


class EmptyClock(Protocol):
    """Records one sample and answers how long the queue has been empty (0 when it is not)."""

    def observe(self, *, empty: bool, now: float) -> float: ...


def empty_for(
    empty_since: float | None, sampled_at: float | None, now: float, max_gap_s: float
) -> tuple[float, float]:
    """(new ``empty_since``, seconds empty) for an empty sample at ``now``; pure."""
    if empty_since is None or sampled_at is None or now - sampled_at > max_gap_s:
        return now, 0.0
    return empty_since, max(0.0, now - empty_since)


class MemoryClock:
    """The same rule in memory: for the simulator and for tests."""

    def __init__(self, max_gap_s: float = 180.0) -> None:
        self.max_gap_s = max_gap_s
        self.empty_since: float | None = None
        self.sampled_at: float | None = None

    def observe(self, *, empty: bool, now: float) -> float:
        seconds = 0.0
        if empty:
            self.empty_since, seconds = empty_for(
                self.empty_since, self.sampled_at, now, self.max_gap_s
            )
        else:
            self.empty_since = None
        self.sampled_at = now
        return seconds


class TableClock:
    """The state item in the jobs table (see the module docstring)."""

    def __init__(
        self, dynamodb: DynamoDBClient, table: str, queue_name: str, max_gap_s: float = 180.0
    ) -> None:
        self._dynamodb = dynamodb
        self._table = table
        self._key = {"pk": {"S": STATE_PK}, "sk": {"S": f"QUEUE#{queue_name}"}}
        self.max_gap_s = max_gap_s

    def observe(self, *, empty: bool, now: float) -> float:
        if not empty:
            self._dynamodb.update_item(
                TableName=self._table,
                Key=self._key,
                UpdateExpression="SET sampled_at = :now REMOVE empty_since",
                ExpressionAttributeValues={":now": {"N": repr(now)}},
            )
            return 0.0
        old = self._dynamodb.update_item(
            TableName=self._table,
            Key=self._key,
            UpdateExpression=(
                "SET sampled_at = :now, empty_since = if_not_exists(empty_since, :now)"
            ),
            ExpressionAttributeValues={":now": {"N": repr(now)}},
            ReturnValues="ALL_OLD",
        ).get("Attributes", {})
        since = float(old["empty_since"]["N"]) if "empty_since" in old else None
        sampled = float(old["sampled_at"]["N"]) if "sampled_at" in old else None
        new_since, seconds = empty_for(since, sampled, now, self.max_gap_s)
        if since is not None and new_since != since:
            self._restart(now)
        return seconds

    def _restart(self, now: float) -> None:
        self._dynamodb.update_item(
            TableName=self._table,
            Key=self._key,
            UpdateExpression="SET empty_since = :now",
            ExpressionAttributeValues={":now": {"N": repr(now)}},
        )
