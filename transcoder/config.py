"""Settings: one frozen, typed object, read from the environment once at start-up.

Every variable is ``TRANSCODER_<FIELD>`` (upper case), except the standard AWS ones, which keep
their usual names (``AWS_ENDPOINT_URL``, ``AWS_REGION``/``AWS_DEFAULT_REGION``, credentials via
botocore's own chain) and ``ECS_AGENT_URI``, which ECS sets. A bad value fails start-up with a
message naming the variable.
"""

from __future__ import annotations

import os
import secrets
import socket
import tempfile
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from transcoder.domain.event import BUS_PATTERN
from transcoder.domain.rungs import DEFAULT_LADDER, Rung

ENV_PREFIX = "TRANSCODER_"


def _default_worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


PositiveSeconds = Annotated[float, Field(gt=0)]


class Settings(BaseSettings):
    """Everything the worker and the CLI need; see docs/configuration.md for each variable."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, frozen=True, extra="ignore", populate_by_name=True
    )

    # Where things live.
    bucket: str = Field(default="transcoder-media", min_length=3, max_length=63)
    queue: str = Field(default="transcoder-jobs", description="jobs queue name or URL")
    dead_letter_queue: str = Field(default="transcoder-jobs-dlq", description="DLQ name or URL")
    table: str = Field(default="transcoder-jobs", min_length=3)
    region: str = Field(
        default="us-east-1",
        validation_alias=AliasChoices("TRANSCODER_REGION", "AWS_REGION", "AWS_DEFAULT_REGION"),
    )
    endpoint_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("TRANSCODER_ENDPOINT_URL", "AWS_ENDPOINT_URL"),
    )
    ecs_agent_uri: str | None = Field(default=None, validation_alias="ECS_AGENT_URI")
    ecs_cluster: str | None = Field(default=None, description="ECS cluster of the worker service")
    ecs_service: str | None = Field(default=None, description="ECS service running the workers")

    # The queue contract.
    visibility_timeout_s: int = Field(default=600, ge=5, le=43_200)
    wait_time_s: int = Field(default=20, ge=0, le=20)
    max_receive_count: int = Field(default=3, ge=1, le=1000)
    # The retry policy (docs/reliability.md, "Retries, layered"). Every step is jittered
    # uniformly in [retry_jitter_min, 1] of itself.
    retry_base_s: PositiveSeconds = 30.0
    retry_max_s: PositiveSeconds = 900.0
    retry_jitter_min: float = Field(default=0.5, gt=0, le=1)
    defer_base_s: PositiveSeconds = Field(
        default=5.0, description="back-off when the table cannot be reached to claim"
    )
    defer_max_s: PositiveSeconds = 120.0
    receive_backoff_base_s: PositiveSeconds = Field(
        default=1.0, description="back-off after a failed ReceiveMessage"
    )
    receive_backoff_max_s: PositiveSeconds = 30.0
    settle_attempts: int = Field(
        default=4, ge=1, le=10, description="tries of each settle step on transient AWS errors"
    )
    settle_backoff_s: PositiveSeconds = 0.5
    sdk_max_attempts: int = Field(
        default=4, ge=1, le=10, description="botocore's own attempts per call (standard mode)"
    )

    # Capacity and the encode.
    slots: int = Field(default=1, ge=1, le=16)
    ffmpeg_threads: int = Field(default=0, ge=0, le=64, description="0 lets ffmpeg choose")
    x264_preset: str = Field(default="veryfast", pattern=r"^[a-z]+$")
    audio_bitrate_kbps: int = Field(default=128, ge=32, le=512)
    gop_s: PositiveSeconds = 2.0
    max_fps: PositiveSeconds = 60.0
    ladder: tuple[Rung, ...] = DEFAULT_LADDER
    hls: bool = Field(
        default=True,
        description="also publish each rendition as HLS (fMP4 segments, one per GOP) and a "
        "master playlist under transcoded/hls/{user}/{video}/, muxed from the same encode "
        "(docs/media.md); false: MP4 renditions only, and a job needs half the scratch",
    )
    stills: bool = Field(
        default=True,
        description="also write a poster JPEG and a thumbnail sprite with its WebVTT index, "
        'from the same ffmpeg run as the renditions (docs/media.md, "Poster and thumbnails")',
    )
    chunking: bool = Field(
        default=True,
        description="split a source longer than chunk_threshold_s into chunks that any worker "
        'encodes, then stitch them without re-encoding (docs/media.md, "Chunked encoding")',
    )
    chunk_s: float = Field(
        default=30.0,
        ge=2.0,
        le=600.0,
        description="about this much source per chunk, rounded to whole GOPs (30 s of 1080p "
        "ladder is about 70 CPU-seconds: it finishes inside Fargate Spot's 2-minute notice)",
    )
    chunk_threshold_s: float = Field(
        default=120.0,
        ge=0.0,
        description="sources longer than this are chunked (shorter ones: one ffmpeg, as before)",
    )
    chunk_postroll_frames: int = Field(
        default=6,
        ge=0,
        le=120,
        description="frames encoded past each chunk's end and dropped at the stitch: x264 "
        "then ends the chunk with the future in its lookahead (docs/media.md, the seam)",
    )
    chunk_warmup_frames: int = Field(
        default=12,
        ge=0,
        le=120,
        description="frames encoded before each chunk and dropped at the stitch: x264's rate "
        "control reaches the chunk's first IDR warm, as in a single pass (no seam)",
    )
    scratch_dir: Path = Path(tempfile.gettempdir()) / "transcoder"
    # A sick worker takes itself out (docs/reliability.md, "A sick worker retires").
    scratch_reserve_bytes: int = Field(
        default=512 * 1024**2,
        ge=0,
        description="free space the scratch filesystem must have before the worker receives a job",
    )
    scratch_margin_ratio: float = Field(
        default=0.5,
        ge=0,
        description="headroom on a job's worst-case scratch use (every rung at its maxrate for "
        "the source's duration) checked after the probe",
    )
    max_environment_failures: int = Field(
        default=3,
        ge=1,
        le=100,
        description="jobs failing in a row with an environment error (full or unwritable "
        "scratch, a missing binary) before the worker retires even though its checks pass",
    )
    unfit_exit_after_s: float = Field(
        default=15.0,
        ge=0,
        le=300,
        description="from worker.unfit to the exit (code 3), while /readyz says why; keep it "
        "inside ECS's stopTimeout",
    )

    # Input limits (permanent failures when exceeded).
    max_input_bytes: int = Field(default=20 * 1024**3, ge=1)
    max_input_duration_s: PositiveSeconds = 4 * 3600.0

    # How ffmpeg reads the source (docs/media.md): through the worker's loopback gateway, which
    # reads S3 in bounded, pinned ranges, or straight from a presigned URL (the first design).
    source_access: Literal["gateway", "presigned"] = Field(
        default="gateway",
        description="gateway: ffmpeg reads from the worker on 127.0.0.1, which reads S3 in "
        "bounded ranges pinned to the queued version; presigned: ffmpeg reads a presigned URL",
    )
    source_read_timeout_s: PositiveSeconds = Field(
        default=10.0,
        description="deadline of one ranged GET of the source by the gateway (SDK retries "
        "included); 3 tries, then the stage fails retryable (aws_unavailable) and ffmpeg is "
        "stopped: a brownout is never read as bad media",
    )
    presign_ttl_s: int = Field(
        default=6 * 3600,
        ge=60,
        le=7 * 24 * 3600,
        description="lifetime of the presigned URL (source_access=presigned only)",
    )

    # Liveness.
    heartbeat_interval_s: PositiveSeconds = 15.0
    stall_timeout_s: PositiveSeconds = 120.0
    max_job_duration_s: PositiveSeconds = 11.5 * 3600
    shutdown_grace_s: PositiveSeconds = 100.0
    ffprobe_timeout_s: PositiveSeconds = 120.0
    task_protection_expiry_s: int = Field(
        default=900,
        ge=60,
        le=48 * 3600,
        description="ECS scale-in protection window, renewed while busy (rounded up to minutes)",
    )

    # Upload.
    multipart_threshold_bytes: int = Field(default=8 * 1024**2, ge=5 * 1024**2)
    multipart_part_bytes: int = Field(default=8 * 1024**2, ge=5 * 1024**2)
    upload_concurrency: int = Field(default=4, ge=1, le=32)

    # Job events (docs/operations.md, "Job events"): off unless a bus is named.
    event_bus: str | None = Field(
        default=None,
        description="EventBridge bus (name or ARN) that gets one event per job that ends",
    )
    event_publish_timeout_s: float = Field(
        default=10.0,
        gt=0,
        le=60,
        description="bound on publishing one job event (every retry included); a job's "
        "settlement never waits longer, and an event not sent by then is counted and logged",
    )

    # Observability.
    metrics_host: str = "0.0.0.0"  # noqa: S104 - containers must be scraped from outside
    metrics_port: int = Field(default=9100, ge=0, le=65_535, description="0 picks a free port")
    queue_poll_interval_s: PositiveSeconds = 20.0
    log_level: str = Field(default="info", pattern=r"^(debug|info|warning|error)$")
    log_json: bool = True
    worker_id: str = Field(default_factory=_default_worker_id, min_length=1, max_length=128)

    @field_validator("event_bus")
    @classmethod
    def _bus_name_or_arn(cls, value: str | None) -> str | None:
        if value and not BUS_PATTERN.fullmatch(value):
            raise ValueError("must be an event bus name or an event bus ARN")
        return value or None

    @model_validator(mode="after")
    def _coherent(self) -> Settings:
        if self.heartbeat_interval_s * 3 > self.visibility_timeout_s:
            raise ValueError(
                "TRANSCODER_HEARTBEAT_INTERVAL_S must be at most a third of "
                "TRANSCODER_VISIBILITY_TIMEOUT_S so visibility is extended well before it expires"
            )
        names = [rung.name for rung in self.ladder]
        if not names or len(set(names)) != len(names):
            raise ValueError("TRANSCODER_LADDER needs at least one rung and unique names")
        return self

    def rung(self, name: str) -> Rung | None:
        return next((rung for rung in self.ladder if rung.name == name), None)


class ConfigError(Exception):
    """Start-up configuration is invalid; the message names each bad variable."""


def _variable_name(field: str) -> str:
    info = Settings.model_fields.get(field)
    alias = info.validation_alias if info else None
    if isinstance(alias, AliasChoices):
        return " / ".join(str(choice) for choice in alias.choices)
    if isinstance(alias, str):
        return alias
    return f"{ENV_PREFIX}{field.upper()}"


def load_settings(**overrides: Any) -> Settings:
    """Read the environment (plus explicit overrides) or raise ConfigError naming the variables."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        lines = []
        for error in exc.errors():
            field = str(error["loc"][0]) if error["loc"] else ""
            name = _variable_name(field) if field else "settings"
            lines.append(f"{name}: {error['msg']} (got {error.get('input')!r})")
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(lines)) from None
