"""Settings: defaults from the design, the standard AWS variables, errors that name the variable."""

from __future__ import annotations

import pytest

from transcoder.config import ConfigError, load_settings


def test_defaults_follow_the_design() -> None:
    settings = load_settings()
    assert settings.visibility_timeout_s == 600
    assert settings.wait_time_s == 20
    assert settings.slots == 1
    assert [rung.name for rung in settings.ladder] == ["720p", "1080p"]


def test_standard_aws_variables_work_unchanged(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:4566")
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    settings = load_settings()
    assert settings.endpoint_url == "http://127.0.0.1:4566"
    assert settings.region == "eu-west-1"


def test_prefixed_variables_and_json_ladder(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRANSCODER_SLOTS", "2")
    monkeypatch.setenv(
        "TRANSCODER_LADDER",
        '[{"name": "480p", "short_side": 480, "crf": 24, "maxrate_kbps": 2000, '
        '"bufsize_kbps": 4000}]',
    )
    settings = load_settings()
    assert settings.slots == 2
    assert settings.rung("480p") is not None


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("TRANSCODER_VISIBILITY_TIMEOUT_S", "soon"),
        ("TRANSCODER_WAIT_TIME_S", "21"),
        ("TRANSCODER_SLOTS", "0"),
        ("TRANSCODER_LOG_LEVEL", "loud"),
    ],
)
def test_a_bad_value_fails_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError, match=variable):
        load_settings()


def test_incoherent_heartbeat_is_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRANSCODER_VISIBILITY_TIMEOUT_S", "60")
    monkeypatch.setenv("TRANSCODER_HEARTBEAT_INTERVAL_S", "30")
    with pytest.raises(ConfigError, match="HEARTBEAT_INTERVAL_S must be at most a third"):
        load_settings()
