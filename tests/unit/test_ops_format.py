"""Operator command helpers: durations and tables, without the emulator."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime

import pytest

from transcoder.ops import commands as ops


@pytest.mark.parametrize(
    ("text", "seconds"), [("90", 90.0), ("30m", 1800.0), ("1h30m", 5400.0), ("2d", 172800.0)]
)
def test_durations(text: str, seconds: float) -> None:
    assert ops.parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "30x", "m30", "1h 30m", "-5m"])
def test_bad_durations_are_usage_errors(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        ops.parse_duration(text)


def test_tables_align_and_ages_read_well() -> None:
    now = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    assert ops.age("2026-01-01T11:55:48.000Z", now) == "4m12s"
    assert ops.age("2025-12-30T08:00:00.000Z", now) == "2d04h"
    assert ops.age("garbage", now) == "?"
    text = ops.table(("video", "status"), [{"video": "v1", "status": "FAILED"}, {"video": "v22"}])
    assert text.splitlines() == ["VIDEO  STATUS", "v1     FAILED", "v22    -"]
