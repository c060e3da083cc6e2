"""The job contract shared by the enqueue Lambda, the worker and the operator commands.

Three things live here because every component must agree on them byte for byte:

* ``JobMessage``: the versioned SQS message body. Anything that does not parse into it is a poison
  message (a permanent failure with a reason, never a crash loop).
* The job record in DynamoDB: its keys (``pk = USER#{userId}``, ``sk = VIDEO#{videoId}``), its
  states, its reason codes and the small typed value objects stored in it.
* The object layout in S3: ``raw/{userId}/{videoId}.{ext}`` in, ``transcoded/{rendition}/...`` out.

This module imports nothing but the standard library and pydantic, so the Lambda bundle stays small.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

SCHEMA_VERSION: Literal[1] = 1
RAW_PREFIX = "raw/"
TRANSCODED_PREFIX = "transcoded/"
DEFAULT_RENDITIONS: tuple[str, ...] = ("720p", "1080p")
STATUS_INDEX = "status-updated_at"
ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$")
RENDITION_PATTERN = re.compile(r"^[1-9][0-9]{2,3}p$")


class Status(StrEnum):
    """``QUEUED -> PROCESSING -> COMPLETED | FAILED``; ``PROCESSING -> QUEUED`` on hand-back."""

    QUEUED = "QUEUED"
    PROCESSING = "PROCESSING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"


class RenditionStatus(StrEnum):
    COMPLETED = "COMPLETED"
    SKIPPED = "SKIPPED"


class Reason(StrEnum):
    """Stable reason codes recorded in ``error.code``; the product shows users these."""

    # The upload itself cannot become a video: permanent, decided on the first attempt.
    INPUT_EMPTY = "input_empty"
    SOURCE_NOT_FOUND = "source_not_found"
    SOURCE_CHANGED = "source_changed"
    NOT_A_VIDEO = "not_a_video"
    NO_VIDEO_STREAM = "no_video_stream"
    TRUNCATED = "truncated"
    UNDECODABLE = "undecodable"
    UNSUPPORTED_CODEC = "unsupported_codec"
    INPUT_TOO_LARGE = "input_too_large"
    INPUT_TOO_LONG = "input_too_long"
    INVALID_KEY = "invalid_key"
    UNSUPPORTED_EXTENSION = "unsupported_extension"
    # The message is not a job we understand: permanent.
    INVALID_MESSAGE = "invalid_message"
    PROCESSING_TIMEOUT = "processing_timeout"
    # Our side failed: retryable until the receive budget is spent.
    FFMPEG_FAILED = "ffmpeg_failed"
    FFMPEG_KILLED = "ffmpeg_killed"
    STALLED = "stalled"
    OUTPUT_INVALID = "output_invalid"
    AWS_UNAVAILABLE = "aws_unavailable"
    AWS_ERROR = "aws_error"
    SCRATCH_FULL = "scratch_full"
    INTERNAL_ERROR = "internal_error"
    RETRIES_EXHAUSTED = "retries_exhausted"


def utcnow() -> datetime:
    return datetime.now(UTC)


def isoformat(moment: datetime) -> str:
    """ISO-8601 in UTC with milliseconds: sorts lexicographically, which the status index needs."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def derive_job_id(bucket: str, key: str, *, version_id: str | None, etag: str | None) -> str:
    """Content identity of an upload: the same object (bucket, key, version or ETag) -> the same id.

    A duplicated S3 notification or a re-sent message therefore maps to the same job and the same
    output keys, while a new upload of the same key (new ETag/version) is a new job.
    """
    if not (version_id or etag):
        raise ValueError("a job needs the source's version id or ETag")
    identity = version_id if version_id else f"etag:{(etag or '').strip(chr(34))}"
    digest = hashlib.sha256(f"{bucket}\n{key}\n{identity}".encode()).hexdigest()
    return digest[:32]


def output_key(rendition: str, user_id: str, video_id: str) -> str:
    return f"{TRANSCODED_PREFIX}{rendition}/{user_id}/{video_id}.mp4"


@dataclass(frozen=True, slots=True)
class RawKey:
    """A parsed ``raw/{userId}/{videoId}.{ext}`` key."""

    user_id: str
    video_id: str
    ext: str


class InvalidKeyError(ValueError):
    """A key that is not ``raw/{userId}/{videoId}.{ext}`` with valid ids and a known extension."""

    def __init__(
        self, key: str, reason: Reason, detail: str, ids: tuple[str, str] | None = None
    ) -> None:
        super().__init__(f"{detail}: {key!r}")
        self.key = key
        self.reason = reason
        self.detail = detail
        self.ids = ids  # (user_id, video_id) when both were valid, to record the rejection under


def parse_raw_key(key: str, allowed_extensions: frozenset[str]) -> RawKey:
    """Parse a decoded key strictly: two segments under ``raw/``, valid ids, known extension."""
    if not key.startswith(RAW_PREFIX):
        raise InvalidKeyError(key, Reason.INVALID_KEY, "key is outside raw/")
    parts = key[len(RAW_PREFIX) :].split("/")
    if len(parts) != 2:
        raise InvalidKeyError(key, Reason.INVALID_KEY, "expected raw/{userId}/{videoId}.{ext}")
    user_id, filename = parts
    video_id, dot, ext = filename.rpartition(".")
    if not dot:
        video_id, ext = filename, ""
    for label, value in (("user id", user_id), ("video id", video_id)):
        if not ID_PATTERN.fullmatch(value):
            raise InvalidKeyError(
                key, Reason.INVALID_KEY, f"{label} must be 1-128 of [A-Za-z0-9_-], not {value!r}"
            )
    if ext.lower() not in allowed_extensions:
        detail = f"extension .{ext} is not allowed" if ext else "file name has no extension"
        raise InvalidKeyError(key, Reason.UNSUPPORTED_EXTENSION, detail, (user_id, video_id))
    return RawKey(user_id=user_id, video_id=video_id, ext=ext.lower())


class JobMessage(BaseModel):
    """The SQS message body, version 1. Unknown fields make the message a poison pill."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    version: Literal[1] = SCHEMA_VERSION
    job_id: str = Field(pattern=r"^[0-9a-f]{32}$")
    bucket: str = Field(min_length=3, max_length=63)
    key: str = Field(min_length=1, max_length=1024)
    user_id: str = Field(pattern=ID_PATTERN.pattern)
    video_id: str = Field(pattern=ID_PATTERN.pattern)
    renditions: tuple[str, ...] = DEFAULT_RENDITIONS
    source_etag: str | None = None
    source_version: str | None = None
    trace_id: str = Field(min_length=1, max_length=128)
    submitted_at: datetime

    @field_validator("renditions")
    @classmethod
    def _known_renditions(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value or len(set(value)) != len(value):
            raise ValueError("renditions must be a non-empty list without duplicates")
        for name in value:
            if not RENDITION_PATTERN.fullmatch(name):
                raise ValueError(f"rendition {name!r} is not of the form '720p'")
        return value

    @model_validator(mode="after")
    def _identity_is_consistent(self) -> Self:
        expected = derive_job_id(
            self.bucket, self.key, version_id=self.source_version, etag=self.source_etag
        )
        if self.job_id != expected:
            raise ValueError(
                "job_id does not match the source identity (bucket, key, version/ETag)"
            )
        return self

    @classmethod
    def for_object(
        cls,
        *,
        bucket: str,
        key: str,
        raw: RawKey,
        etag: str | None,
        version_id: str | None,
        trace_id: str,
        renditions: tuple[str, ...] = DEFAULT_RENDITIONS,
    ) -> JobMessage:
        return cls(
            job_id=derive_job_id(bucket, key, version_id=version_id, etag=etag),
            bucket=bucket,
            key=key,
            user_id=raw.user_id,
            video_id=raw.video_id,
            renditions=renditions,
            source_etag=etag.strip('"') if etag else None,
            source_version=version_id,
            trace_id=trace_id,
            submitted_at=utcnow(),
        )


class SourceFacts(BaseModel):
    """What ffprobe said about the upload (stored under ``source``)."""

    model_config = ConfigDict(frozen=True)

    size_bytes: int
    duration_s: float
    width: int
    height: int
    display_width: int
    display_height: int
    fps: float
    video_codec: str
    audio_codec: str | None
    rotation: int
    pix_fmt: str
    container: str


class RenditionRecord(BaseModel):
    """One rendition's facts (stored under ``renditions.{name}``)."""

    model_config = ConfigDict(frozen=True)

    status: RenditionStatus
    key: str | None = None
    width: int | None = None
    height: int | None = None
    duration_s: float | None = None
    bytes: int | None = None
    bitrate_kbps: int | None = None
    encode_s: float | None = None
    reason: str | None = None


class ErrorInfo(BaseModel):
    model_config = ConfigDict(frozen=True)

    code: str
    message: str
    retryable: bool


def record_key(user_id: str, video_id: str) -> dict[str, dict[str, str]]:
    """The DynamoDB primary key of a job record, in the low-level attribute-value form."""
    return {"pk": {"S": f"USER#{user_id}"}, "sk": {"S": f"VIDEO#{video_id}"}}


def to_attr(value: Any) -> dict[str, Any]:
    """Python value -> DynamoDB attribute value (the subset the record uses)."""
    if value is None:
        return {"NULL": True}
    if isinstance(value, bool):
        return {"BOOL": value}
    if isinstance(value, int | float):
        return {"N": repr(value) if isinstance(value, float) else str(value)}
    if isinstance(value, str):
        return {"S": value}
    if isinstance(value, datetime):
        return {"S": isoformat(value)}
    if isinstance(value, Mapping):
        return {"M": {str(k): to_attr(v) for k, v in value.items()}}
    if isinstance(value, list | tuple):
        return {"L": [to_attr(v) for v in value]}
    raise TypeError(f"cannot store {type(value).__name__} in the job record")


def from_attr(attr: Mapping[str, Any]) -> Any:
    """DynamoDB attribute value -> Python value (numbers come back as int or float)."""
    (kind, value), *_ = attr.items()
    if kind == "NULL":
        return None
    if kind in ("S", "BOOL"):
        return value
    if kind == "N":
        number = float(value)
        return (
            int(number) if number.is_integer() and "." not in value and "e" not in value else number
        )
    if kind == "M":
        return {k: from_attr(v) for k, v in value.items()}
    if kind == "L":
        return [from_attr(v) for v in value]
    raise TypeError(f"unexpected DynamoDB attribute type {kind}")


def from_item(item: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    return {name: from_attr(attr) for name, attr in item.items()}
