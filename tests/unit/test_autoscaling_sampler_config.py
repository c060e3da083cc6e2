"""The sampler without the emulator: which notifications count as uploads, and its configuration."""

from __future__ import annotations

import pytest
from support.events import upload_event

from autoscaling.sampler import ConfigError, SamplerConfig, uploads_in


def test_uploads_in_recognises_s3_and_eventbridge_notifications() -> None:
    assert uploads_in(upload_event("raw/u1/v1.mp4")) == 1
    assert uploads_in(upload_event("transcoded/720p/u1/v1.mp4")) == 0
    records = {
        "Records": [
            {"eventName": "ObjectCreated:Put", "s3": {"object": {"key": "raw/u/a.mov"}}},
            {"eventName": "ObjectCreated:Put", "s3": {"object": {"key": "raw/u/b.mov"}}},
            {"eventName": "ObjectRemoved:Delete", "s3": {"object": {"key": "raw/u/c.mov"}}},
        ]
    }
    assert uploads_in(records) == 2
    assert uploads_in({"source": "aws.events", "detail-type": "Scheduled Event"}) == 0


def test_config_from_env_names_what_is_missing_or_wrong() -> None:
    with pytest.raises(ConfigError, match="TRANSCODER_ECS_SERVICE"):
        SamplerConfig.from_env({"TRANSCODER_QUEUE": "q", "TRANSCODER_ECS_CLUSTER": "c"})
    base = {
        "TRANSCODER_QUEUE": "q",
        "TRANSCODER_ECS_CLUSTER": "c",
        "TRANSCODER_ECS_SERVICE": "s",
        "TRANSCODER_TABLE": "t",
    }
    with pytest.raises(ConfigError, match="TRANSCODER_SCALE_MODE"):
        SamplerConfig.from_env({**base, "TRANSCODER_SCALE_MODE": "yolo"})
    with pytest.raises(ConfigError, match="TRANSCODER_SCALE_MAX_TASKS"):
        SamplerConfig.from_env({**base, "TRANSCODER_SCALE_MAX_TASKS": "many"})
    config = SamplerConfig.from_env({**base, "TRANSCODER_SLOTS": "2"})
    assert (config.direct, config.policy.jobs_per_task) == (False, 2)
