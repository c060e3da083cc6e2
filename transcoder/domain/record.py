"""The job record: one typed, versioned value, parsed once at the DynamoDB edge.

``JobRecord`` is what every component reads and what ``transcoder.domain.transitions`` rewrites;
nothing above the adapters sees DynamoDB attribute-value dicts. ``to_item``/``from_item`` convert
with boto3's own ``TypeSerializer``/``TypeDeserializer``: numbers travel as ``Decimal``, so an
integer such as ``9007199254740993`` comes back exactly, and a float is stored as its shortest
``repr`` (NaN and infinities are refused by the model: DynamoDB cannot store them).

Schema evolution: ``schema`` is the record's version. Attributes this code does not know (written
by a newer release) are kept in the model's extras and written back unchanged, so a rolling deploy
never strips a newer writer's fields. A record whose ``schema`` is newer than ``RECORD_SCHEMA`` is
still read; only the fields known here are interpreted.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from pydantic import AfterValidator, BaseModel, ConfigDict, PlainSerializer, ValidationError

from transcoder.domain.job import (
    ErrorInfo,
    HlsRecord,
    JobMessage,
    PartsRecord,
    PosterRecord,
    RenditionRecord,
    SourceFacts,
    Status,
    ThumbnailsRecord,
    isoformat,
)

RECORD_SCHEMA = 1
KEY_ATTRIBUTES = ("pk", "sk")


def _to_millisecond(moment: datetime) -> datetime:
    utc = moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)
    return utc.replace(microsecond=utc.microsecond // 1000 * 1000)


# Stored as ISO-8601 strings with milliseconds and a Z: they sort, which the status index needs;
# held at that precision in memory too, so a record equals itself after a round trip.
Timestamp = Annotated[
    datetime, AfterValidator(_to_millisecond), PlainSerializer(isoformat, return_type=str)
]
_SERIALIZER = TypeSerializer()
_DESERIALIZER = TypeDeserializer()


class RecordInvalid(ValueError):
    """A stored item that does not parse as a job record (named by its key)."""


def record_key(user_id: str, video_id: str) -> dict[str, dict[str, str]]:
    """The DynamoDB primary key of a job record, in the low-level attribute-value form."""
    return {"pk": {"S": f"USER#{user_id}"}, "sk": {"S": f"VIDEO#{video_id}"}}


class JobRecord(BaseModel):
    """One video's job record (``pk = USER#{user_id}``, ``sk = VIDEO#{video_id}``)."""

    model_config = ConfigDict(frozen=True, extra="allow", allow_inf_nan=False)

    schema_version: int = RECORD_SCHEMA
    user_id: str
    video_id: str
    status: Status
    job_id: str | None = None
    # The optimistic-concurrency token: every write sets rev + 1 on condition rev = what it read.
    rev: int = 0
    # A fresh id per write: after a lost answer, the writer recognises its own write by it.
    write_id: str | None = None
    attempts: int = 0
    lease_owner: str | None = None
    lease_expires_at: float | None = None  # epoch seconds
    progress: int = 0
    # The upload this record describes.
    source_bucket: str | None = None
    source_key: str | None = None
    source_size: int | None = None
    source_sequencer: str | None = None
    source_version: str | None = None
    uploaded_at: Timestamp | None = None
    trace_id: str | None = None
    submitted_at: Timestamp | None = None
    message: str | None = None  # the job message's JSON: what retry and redrive re-send
    enqueued: bool | None = None
    message_id: str | None = None
    # What the worker found and made.
    source: SourceFacts | None = None
    renditions: dict[str, RenditionRecord] = {}
    poster: PosterRecord | None = None
    thumbnails: ThumbnailsRecord | None = None
    hls: HlsRecord | None = None
    # A chunked job's plan and parts (transitions.split); None for a single-pass job.
    parts: PartsRecord | None = None
    error: ErrorInfo | None = None
    # When things happened.
    created_at: Timestamp | None = None
    updated_at: Timestamp | None = None
    started_at: Timestamp | None = None
    completed_at: Timestamp | None = None
    failed_at: Timestamp | None = None
    requeued_at: Timestamp | None = None
    dead_lettered_at: Timestamp | None = None
    source_deleted_at: Timestamp | None = None

    def job_message(self) -> JobMessage | None:
        """The stored job message, when there is one this release can read."""
        if not self.message:
            return None
        try:
            return JobMessage.model_validate_json(self.message)
        except ValidationError:
            return None

    def lease_live(self, now: float) -> bool:
        """A worker holds this job under a lease that has not run out.

        For a chunked job that is the job's own lease (while it is split) or the stitch's: the
        chunks write only under the job's work prefix, so they hold nothing a newer upload of the
        video or the dead-letter handler must wait for.
        """
        if self.status is not Status.PROCESSING:
            return False
        stitching = self.parts is not None and self.parts.stitch_live(now)
        return (self.lease_expires_at or 0.0) > now or stitching

    def lease_remaining_s(self, now: float) -> float:
        if not self.lease_live(now):
            return 0.0
        own = max(0.0, (self.lease_expires_at or 0.0) - now)
        return max(own, self.parts.stitch_remaining_s(now) if self.parts else 0.0)

    def permanently_failed(self) -> bool:
        return self.status is Status.FAILED and self.error is not None and not self.error.retryable

    def extras(self) -> dict[str, Any]:
        """Attributes a newer release wrote that this one does not know (kept on rewrite)."""
        return dict(self.__pydantic_extra__ or {})


def _storable(value: Any) -> Any:
    """Python value -> what TypeSerializer takes (floats become exact Decimals of their repr)."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, float):
        return Decimal(repr(value))
    if isinstance(value, Mapping):
        return {str(k): _storable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_storable(v) for v in value]
    return value


def _plain(value: Any) -> Any:
    """What TypeDeserializer returns -> plain Python (integral Decimals become ints exactly)."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def to_item(record: JobRecord) -> dict[str, Any]:
    """The record as a DynamoDB item (attribute values), keys included."""
    # Absent top-level fields stay absent (the status index and conditions rely on that); a None
    # inside a nested value is stored as NULL, so a required-but-None field reads back as None.
    dumped = record.model_dump(mode="python", by_alias=True)
    data = {name: value for name, value in dumped.items() if value is not None}
    data.pop("schema_version", None)
    data["schema"] = record.schema_version
    item = {name: _SERIALIZER.serialize(_storable(value)) for name, value in data.items()}
    return {**item, **record_key(record.user_id, record.video_id)}


def from_item(item: Mapping[str, Mapping[str, Any]]) -> JobRecord:
    """A DynamoDB item -> ``JobRecord``; ``RecordInvalid`` names the key when it does not parse."""
    data = {name: _plain(_DESERIALIZER.deserialize(attr)) for name, attr in item.items()}  # type: ignore[arg-type]
    for name in KEY_ATTRIBUTES:
        data.pop(name, None)
    data["schema_version"] = data.pop("schema", RECORD_SCHEMA)
    try:
        return JobRecord.model_validate(data)
    except ValidationError as exc:
        where = f"{data.get('user_id')}/{data.get('video_id')}"
        raise RecordInvalid(f"job record {where} does not parse: {exc}") from None


def value(python: Any) -> dict[str, Any]:
    """One expression attribute value (for conditions and queries) in the low-level form."""
    if isinstance(python, datetime):
        python = isoformat(python)
    return dict(_SERIALIZER.serialize(_storable(python)))


def put_condition(expected_rev: int | None) -> dict[str, Any]:
    """The PutItem arguments that make a write conditional on the rev it read.

    ``None``: there must be no record yet. Records written before ``rev`` existed count as rev 0.
    With ``ReturnValuesOnConditionCheckFailure``, a refused put returns the record as it stands,
    so the writer can re-decide (or recognise its own earlier write) without another read.
    """
    if expected_rev is None:
        condition, values = "attribute_not_exists(pk)", {}
    elif expected_rev == 0:
        condition, values = "attribute_not_exists(rev) OR rev = :rev", {":rev": value(0)}
    else:
        condition, values = "rev = :rev", {":rev": value(expected_rev)}
    arguments: dict[str, Any] = {
        "ConditionExpression": condition,
        "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
    }
    if values:
        arguments["ExpressionAttributeValues"] = values
    return arguments
