"""The job contract shared by the enqueue Lambda, the worker and the operator commands.

Three things live here because every component must agree on them byte for byte:

* ``JobMessage``: the versioned SQS message body. Anything that does not parse into it is a poison
  message (a permanent failure with a reason, never a crash loop), except a message from a newer
  producer (see "Schema evolution" below).
* The job record in DynamoDB: its keys (``pk = USER#{userId}``, ``sk = VIDEO#{videoId}``), its
  states, its reason codes and the small typed value objects stored in it.
* The object layout in S3: ``raw/{userId}/{videoId}.{ext}`` in, ``transcoded/{rendition}/...`` out.

Schema evolution of the message (what lets a rolling deploy never fail a job):

* A new *optional* field keeps ``version`` 1. Readers ignore fields they do not know
  (``extra="ignore"``), so an old worker runs a new producer's message as before.
* An incompatible change bumps ``version``. Version 2 is the *part* message of a chunked job
  (``Part``: one chunk, or the audio, of a long upload); plain job messages stay version 1, so
  during a rolling deploy an old worker still runs them and postpones the parts it cannot read.
* An incompatible change bumps ``version``. A worker that meets a version newer than
  ``SCHEMA_VERSION`` neither fails nor poisons it: it hands the message back without spending a
  receive, for a newer worker; the dead-letter handler leaves such a message in the DLQ.
* Deploy order: consumers first (workers, then the dead-letter handler), producers last (the
  enqueue Lambda, operators' CLI).

This module imports nothing but the standard library and pydantic, so the Lambda bundle stays small.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

SCHEMA_VERSION = 2  # the newest message version this release reads
JOB_MESSAGE_VERSION = 1  # what the enqueue Lambda writes
PART_MESSAGE_VERSION = 2  # a chunked job's part (``JobMessage.part``)
RAW_PREFIX = "raw/"
WORK_PREFIX = "work/"
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
    SOURCE_DELETED = "source_deleted"
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
    UNKNOWN_RENDITION = "unknown_rendition"
    PROCESSING_TIMEOUT = "processing_timeout"
    # Our side failed: retryable until the receive budget is spent.
    FFMPEG_FAILED = "ffmpeg_failed"
    FFMPEG_KILLED = "ffmpeg_killed"
    STALLED = "stalled"
    OUTPUT_INVALID = "output_invalid"
    AWS_UNAVAILABLE = "aws_unavailable"
    AWS_ERROR = "aws_error"
    SCRATCH_FULL = "scratch_full"
    SCRATCH_TOO_SMALL = "scratch_too_small"  # the job needs more scratch than a worker has
    # The worker's own environment, not the job (transcoder.runtime.fitness): the job is handed
    # back with its receive spared and the worker retires.
    SCRATCH_UNWRITABLE = "scratch_unwritable"
    FFMPEG_MISSING = "ffmpeg_missing"
    ENVIRONMENT_FAILURES = "environment_failures"
    LEASE_LOST = "lease_lost"  # another attempt owns the job now (logged; never recorded)
    INTERNAL_ERROR = "internal_error"
    RETRIES_EXHAUSTED = "retries_exhausted"


def utcnow() -> datetime:
    return datetime.now(UTC)


def isoformat(moment: datetime) -> str:
    """ISO-8601 in UTC with milliseconds: sorts lexicographically, which the status index needs."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def derive_job_id(
    bucket: str,
    key: str,
    *,
    version_id: str | None,
    etag: str | None,
    sequencer: str | None = None,
) -> str:
    """Identity of an upload: the same object (bucket, key, version or ETag) -> the same id.

    A duplicated S3 notification or a re-sent message therefore maps to the same job and the same
    output keys, while a new upload of the same key is a new job. On a bucket without versioning
    the same bytes uploaded again have the same ETag, so the event's ``sequencer`` (one per PUT,
    shared by duplicated notifications) tells the two uploads apart.
    """
    if not (version_id or etag):
        raise ValueError("a job needs the source's version id or ETag")
    identity = version_id if version_id else f"etag:{(etag or '').strip(chr(34))}"
    if not version_id and sequencer:
        identity += f"@{sequencer.upper().lstrip('0')}"
    digest = hashlib.sha256(f"{bucket}\n{key}\n{identity}".encode()).hexdigest()
    return digest[:32]


def output_key(rendition: str, user_id: str, video_id: str) -> str:
    return f"{TRANSCODED_PREFIX}{rendition}/{user_id}/{video_id}.mp4"


# poster/, thumbnails/ and hls/ cannot clash with a rendition: rendition names are "{height}p".


def poster_key(user_id: str, video_id: str) -> str:
    """The poster image: ``transcoded/poster/{user}/{video}.jpg``."""
    return f"{TRANSCODED_PREFIX}poster/{user_id}/{video_id}.jpg"


def thumbnails_prefix(user_id: str, video_id: str) -> str:
    """The scrubbing previews: ``sprite.jpg`` and its WebVTT index ``thumbnails.vtt``."""
    return f"{TRANSCODED_PREFIX}thumbnails/{user_id}/{video_id}/"


def hls_prefix(user_id: str, video_id: str) -> str:
    """The HLS stream: ``master.m3u8`` and one folder per rendition (playlist, init, segments)."""
    return f"{TRANSCODED_PREFIX}hls/{user_id}/{video_id}/"


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


def raw_ids(key: str) -> tuple[str, str] | None:
    """(user_id, video_id) that a ``raw/{userId}/{videoId}.{ext}`` key names, else None."""
    if not key.startswith(RAW_PREFIX):
        return None
    parts = key[len(RAW_PREFIX) :].split("/")
    if len(parts) != 2 or not parts[0] or not parts[1]:
        return None
    video_id = parts[1].rpartition(".")[0] or parts[1]
    return parts[0], video_id


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


class PartKind(StrEnum):
    CHUNK = "chunk"
    AUDIO = "audio"


class Part(BaseModel):
    """The piece of a chunked job a part message asks for (``transcoder.media.chunks``).

    Chunks are the output frames ``[start_frame, end_frame)`` at ``rate`` (``end_frame`` None: to
    the end of the source), on the ``keyint`` GOP grid; the audio part encodes the whole source's
    audio once. Parts are numbered ``0..parts-1``: the chunks first, then the audio.
    """

    model_config = ConfigDict(frozen=True, extra="ignore")

    index: int = Field(ge=0)
    parts: int = Field(ge=2)  # the job's parts: its chunks, then the audio when it has audio
    chunks: int = Field(ge=1)
    kind: PartKind
    rate: str = Field(pattern=r"^[1-9][0-9]*/[1-9][0-9]*$")
    keyint: int = Field(ge=1)
    expected_frames: int = Field(ge=1)
    start_frame: int = Field(default=0, ge=0)
    end_frame: int | None = Field(default=None, ge=1)
    postroll_frames: int = Field(default=0, ge=0)
    warmup_frames: int = Field(default=0, ge=0)

    @property
    def label(self) -> str:
        """How errors and logs name the part: ``chunk 3 of 20`` or ``the audio``."""
        if self.kind is PartKind.AUDIO:
            return "the audio part"
        return f"chunk {self.index + 1} of {self.chunks}"


def work_prefix(job_id: str) -> str:
    """Where a chunked job's parts are kept until the stitch (removed when it completes)."""
    return f"{WORK_PREFIX}{job_id}/"


def chunk_key(job_id: str, rendition: str, index: int) -> str:
    return f"{work_prefix(job_id)}{rendition}/{index:05d}.mp4"


def audio_key(job_id: str) -> str:
    return f"{work_prefix(job_id)}audio.mp4"


class JobMessage(BaseModel):
    """The SQS message body, version 1 (2 with a ``part``). Unknown fields are ignored."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    version: int = Field(default=JOB_MESSAGE_VERSION, ge=1, le=SCHEMA_VERSION)
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
    # Optional since the first release (an old producer's message lacks them): S3's per-key event
    # order and the event time, which order two uploads of one video (transitions.is_newer).
    source_sequencer: str | None = Field(default=None, pattern=r"^[0-9A-Fa-f]{1,64}$")
    uploaded_at: datetime | None = None
    # Version 2: one part of a chunked job (the job's own message has none).
    part: Part | None = None

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
            self.bucket,
            self.key,
            version_id=self.source_version,
            etag=self.source_etag,
            sequencer=self.source_sequencer,
        )
        if self.job_id != expected:
            raise ValueError(
                "job_id does not match the source identity (bucket, key, version/ETag)"
            )
        if self.part is not None and self.version < PART_MESSAGE_VERSION:
            raise ValueError(f"a part message is version {PART_MESSAGE_VERSION}")
        return self

    def for_part(self, part: Part) -> JobMessage:
        """This job's message for one of its parts."""
        return self.model_copy(update={"part": part, "version": PART_MESSAGE_VERSION})

    def whole(self) -> JobMessage:
        """The job's own message (what retry and redrive re-send), without a part."""
        return self.model_copy(update={"part": None, "version": JOB_MESSAGE_VERSION})

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
        sequencer: str | None = None,
        uploaded_at: datetime | None = None,
    ) -> JobMessage:
        return cls(
            job_id=derive_job_id(
                bucket, key, version_id=version_id, etag=etag, sequencer=sequencer
            ),
            source_sequencer=sequencer,
            uploaded_at=uploaded_at,
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


class PosterRecord(BaseModel):
    """The poster image (a representative frame at the top rendition's size)."""

    model_config = ConfigDict(frozen=True)

    key: str
    width: int
    height: int
    bytes: int
    content_type: str = "image/jpeg"


class ThumbnailsRecord(BaseModel):
    """The scrubbing previews: one sprite sheet of tiles and the WebVTT file that indexes it."""

    model_config = ConfigDict(frozen=True)

    sprite_key: str
    vtt_key: str
    interval_s: float
    count: int
    tile_width: int
    tile_height: int
    columns: int
    rows: int
    bytes: int


class HlsVariant(BaseModel):
    """One rendition's HLS media playlist (fMP4 segments), as the master playlist lists it.

    ``bandwidth`` is the peak segment bit rate (RFC 8216), ``average_bandwidth`` the mean, both
    in bits per second; ``bytes`` counts the init segment, the segments and the playlist.
    """

    model_config = ConfigDict(frozen=True)

    playlist_key: str
    segments: int
    bandwidth: int
    codecs: str
    width: int
    height: int
    bytes: int
    average_bandwidth: int = 0
    frame_rate: float = 0.0


class HlsRecord(BaseModel):
    """The adaptive stream: a master playlist listing every produced rendition.

    ``segment_s`` is one GOP, the duration of every segment but the last.
    """

    model_config = ConfigDict(frozen=True)

    master_key: str
    segment_s: float
    variants: dict[str, HlsVariant]


class Published(BaseModel):
    """Everything a completed job made and uploaded (what ``COMPLETED`` records)."""

    model_config = ConfigDict(frozen=True)

    renditions: dict[str, RenditionRecord]
    poster: PosterRecord | None = None
    thumbnails: ThumbnailsRecord | None = None
    hls: HlsRecord | None = None


class ErrorInfo(BaseModel):
    model_config = ConfigDict(frozen=True)

    code: str
    message: str
    retryable: bool


class PartStatus(StrEnum):
    QUEUED = "QUEUED"
    PROCESSING = "PROCESSING"
    DONE = "DONE"


class PartState(BaseModel):
    """One part of a chunked job: its own lease, attempts and last error."""

    model_config = ConfigDict(frozen=True)

    status: PartStatus = PartStatus.QUEUED
    owner: str | None = None
    attempts: int = 0
    lease_expires_at: float | None = None
    progress: int = 0
    error: ErrorInfo | None = None

    def live(self, now: float) -> bool:
        return self.owner is not None and (self.lease_expires_at or 0.0) > now


class PartsRecord(BaseModel):
    """A chunked job's plan and the state of each part (``JobRecord.parts``).

    ``starts`` are the chunks' first output frames (chunk ``i`` ends where ``i + 1`` starts, the
    last at the end of the source); ``states`` holds one entry per chunk, then one for the audio
    when the source has audio. ``stitcher`` is the part whose completion was the last one: its
    lease (renewed as it stitches) is the stitch's, decided once by that conditional write.
    """

    model_config = ConfigDict(frozen=True)

    rate: str
    keyint: int
    expected_frames: int
    postroll_frames: int = 0
    warmup_frames: int = 0
    starts: tuple[int, ...]
    audio: bool
    states: tuple[PartState, ...]
    sent: bool = False  # every part's message was sent (the job's own lease is released)
    stitcher: int | None = None

    @property
    def chunk_count(self) -> int:
        return len(self.starts)

    def part(self, index: int) -> Part:
        """What part ``index``'s message asks for."""
        parts = len(self.states)
        if index >= self.chunk_count:
            return Part(
                index=index,
                parts=parts,
                chunks=self.chunk_count,
                kind=PartKind.AUDIO,
                rate=self.rate,
                keyint=self.keyint,
                expected_frames=self.expected_frames,
            )
        end = self.starts[index + 1] if index + 1 < self.chunk_count else None
        return Part(
            index=index,
            parts=parts,
            chunks=self.chunk_count,
            kind=PartKind.CHUNK,
            rate=self.rate,
            keyint=self.keyint,
            expected_frames=self.expected_frames,
            start_frame=self.starts[index],
            end_frame=end,
            postroll_frames=self.postroll_frames,
            warmup_frames=self.warmup_frames,
        )

    def matches(self, part: Part) -> bool:
        """``part`` belongs to this plan (not to an earlier, since-cleared one)."""
        return part.index < len(self.states) and self.part(part.index) == part

    def weight(self, index: int) -> int:
        if index >= self.chunk_count:  # the audio: cheap next to the video
            return max(1, self.expected_frames // 50)
        end = self.starts[index + 1] if index + 1 < self.chunk_count else self.expected_frames
        return max(1, end - self.starts[index])

    def progress(self) -> int:
        """The job's progress: its parts', weighted by their frames."""
        total = sum(self.weight(i) for i in range(len(self.states)))
        done = sum(
            self.weight(i) * (100 if s.status is PartStatus.DONE else s.progress)
            for i, s in enumerate(self.states)
        )
        return min(99, done // total) if self.stitcher is None else 99

    def done(self) -> int:
        return sum(1 for s in self.states if s.status is PartStatus.DONE)

    def stitch_live(self, now: float) -> bool:
        return self.stitcher is not None and self.states[self.stitcher].live(now)

    def stitch_remaining_s(self, now: float) -> float:
        if not self.stitch_live(now):
            return 0.0
        assert self.stitcher is not None
        return max(0.0, (self.states[self.stitcher].lease_expires_at or 0.0) - now)

    def with_state(self, index: int, state: PartState) -> PartsRecord:
        states = list(self.states)
        states[index] = state
        return self.model_copy(update={"states": tuple(states)})


def newer_schema(body: str) -> int | None:
    """The ``version`` of a message from a newer producer than this release, else None.

    Read before the full parse, so that a message this release cannot understand yet is handed
    back for a newer consumer instead of being treated as poison.
    """
    try:
        data = json.loads(body)
    except ValueError:
        return None
    version = data.get("version") if isinstance(data, dict) else None
    if isinstance(version, int) and not isinstance(version, bool) and version > SCHEMA_VERSION:
        return version
    return None
