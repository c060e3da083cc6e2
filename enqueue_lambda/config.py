"""The Lambdas' configuration: environment variables, validated once at cold start.

A bad or missing variable raises ``ConfigError`` naming every problem at once; raised during the
Lambda's init phase, it shows up as an init error on every invocation until the function's
configuration is fixed, instead of as a confusing failure deep inside a record.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from transcoder.domain.event import BUS_PATTERN
from transcoder.domain.job import DEFAULT_RENDITIONS, RENDITION_PATTERN
from transcoder.domain.rungs import ladder_from_json

DEFAULT_EXTENSIONS = frozenset(
    {"mp4", "m4v", "mov", "mkv", "webm", "avi", "mpg", "mpeg", "ts", "mts", "m2ts", "3gp"}
    | {"flv", "wmv", "ogv"}
)
DEFAULT_MAX_INPUT_BYTES = 20 * 1024**3
EXTENSION_PATTERN = re.compile(r"^[a-z0-9]{1,10}$")
TABLE_PATTERN = re.compile(r"^[A-Za-z0-9_.-]{3,255}$")


class ConfigError(RuntimeError):
    """The Lambda's environment is incomplete or invalid; the message names each variable."""


def _split(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


def _table(env: Mapping[str, str], problems: list[str]) -> str:
    table = env.get("TRANSCODER_TABLE", "")
    if not TABLE_PATTERN.fullmatch(table):
        problems.append(f"TRANSCODER_TABLE must name the DynamoDB table (got {table!r})")
    return table


def _queue_url(env: Mapping[str, str], problems: list[str]) -> str:
    url = env.get("TRANSCODER_QUEUE_URL", "")
    if not url.startswith(("https://", "http://")):
        problems.append(f"TRANSCODER_QUEUE_URL must be the jobs queue's URL (got {url!r})")
    return url


def _max_bytes(env: Mapping[str, str], problems: list[str]) -> int:
    raw = env.get("TRANSCODER_MAX_INPUT_BYTES", str(DEFAULT_MAX_INPUT_BYTES))
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value <= 0:
        problems.append(f"TRANSCODER_MAX_INPUT_BYTES must be a positive integer (got {raw!r})")
    return value


def _extensions(env: Mapping[str, str], problems: list[str]) -> frozenset[str]:
    raw = env.get("TRANSCODER_ALLOWED_EXTENSIONS")
    if raw is None:
        return DEFAULT_EXTENSIONS
    values = frozenset(e.lower().lstrip(".") for e in _split(raw))
    if not values or not all(EXTENSION_PATTERN.fullmatch(e) for e in values):
        problems.append(
            f"TRANSCODER_ALLOWED_EXTENSIONS must be a comma-separated list like 'mp4,mov' "
            f"(got {raw!r})"
        )
    return values


def _ladder_names(env: Mapping[str, str], problems: list[str]) -> frozenset[str]:
    """The rung names of the ladder the workers use (``TRANSCODER_LADDER``, as for the worker)."""
    try:
        return frozenset(rung.name for rung in ladder_from_json(env.get("TRANSCODER_LADDER")))
    except ValueError as exc:
        problems.append(f"TRANSCODER_LADDER must be the workers' ladder as JSON: {exc}")
        return frozenset()


def _renditions(env: Mapping[str, str], problems: list[str]) -> tuple[str, ...]:
    raw = env.get("TRANSCODER_RENDITIONS")
    values = DEFAULT_RENDITIONS if raw is None else tuple(_split(raw))
    valid = all(RENDITION_PATTERN.fullmatch(r) for r in values)
    if not values or not valid or len(set(values)) != len(values):
        problems.append(
            f"TRANSCODER_RENDITIONS must be a comma-separated list like '720p,1080p' (got {raw!r})"
        )
        return values
    known = _ladder_names(env, problems)
    unknown = [name for name in values if known and name not in known]
    if unknown:
        problems.append(
            f"TRANSCODER_RENDITIONS names {', '.join(unknown)}, which the workers' ladder "
            f"(TRANSCODER_LADDER) does not have: {', '.join(sorted(known))}"
        )
    return values


def _bucket(env: Mapping[str, str]) -> str | None:
    return env.get("TRANSCODER_BUCKET") or None


def _event_bus(env: Mapping[str, str], problems: list[str]) -> str | None:
    """``TRANSCODER_EVENT_BUS``: the EventBridge bus (name or ARN) for job events; unset: off."""
    bus = env.get("TRANSCODER_EVENT_BUS") or None
    if bus is not None and not BUS_PATTERN.fullmatch(bus):
        problems.append(f"TRANSCODER_EVENT_BUS must be an event bus name or ARN (got {bus!r})")
    return bus


def _raise_if(problems: list[str]) -> None:
    if problems:
        raise ConfigError("Lambda misconfigured:\n  " + "\n  ".join(problems))


@dataclass(frozen=True)
class EnqueueConfig:
    """What the enqueue Lambda needs; ``from_env`` reads and validates its variables."""

    table: str
    queue_url: str
    max_input_bytes: int = DEFAULT_MAX_INPUT_BYTES
    allowed_extensions: frozenset[str] = DEFAULT_EXTENSIONS
    renditions: tuple[str, ...] = DEFAULT_RENDITIONS
    bucket: str | None = None  # when set, events from other buckets are ignored (and logged)
    event_bus: str | None = None  # job events for the jobs this Lambda ends (rejections)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> EnqueueConfig:
        problems: list[str] = []
        config = cls(
            table=_table(env, problems),
            queue_url=_queue_url(env, problems),
            max_input_bytes=_max_bytes(env, problems),
            allowed_extensions=_extensions(env, problems),
            renditions=_renditions(env, problems),
            bucket=_bucket(env),
            event_bus=_event_bus(env, problems),
        )
        _raise_if(problems)
        return config


@dataclass(frozen=True)
class DeadLetterConfig:
    """What the dead-letter handler needs: the table, and the bus for job events."""

    table: str
    event_bus: str | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> DeadLetterConfig:
        problems: list[str] = []
        config = cls(table=_table(env, problems), event_bus=_event_bus(env, problems))
        _raise_if(problems)
        return config


def table_from_env(env: Mapping[str, str]) -> str:
    """The dead-letter handler needs only the table."""
    problems: list[str] = []
    table = _table(env, problems)
    _raise_if(problems)
    return table
