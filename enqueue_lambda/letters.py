"""Reading dead-lettered SQS records: the ids a poison body names, the message attributes."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from transcoder.domain.job import ID_PATTERN

JOB_ID = re.compile(r"^[0-9a-f]{32}$")


def poison_ids(body: str) -> tuple[str, str, str | None] | None:
    """(user_id, video_id, job_id or None) when a non-job body still names a valid video."""
    try:
        data = json.loads(body)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    user, video, job = data.get("user_id"), data.get("video_id"), data.get("job_id")
    if not all(isinstance(v, str) and ID_PATTERN.fullmatch(v) for v in (user, video)):
        return None
    job_id = job if isinstance(job, str) and JOB_ID.fullmatch(job) else None
    return str(user), str(video), job_id


def message_attributes(record: Mapping[str, Any]) -> dict[str, str]:
    """String message attributes of an SQS Lambda record (``stringValue`` in Lambda's shape)."""
    attributes = record.get("messageAttributes") or {}
    return {
        name: str(value.get("stringValue"))
        for name, value in attributes.items()
        if isinstance(value, Mapping) and value.get("stringValue") is not None
    }
