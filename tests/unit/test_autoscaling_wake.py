"""Wake time follows the image: task start = provisioning + image pull + container start."""

from __future__ import annotations

import random
from dataclasses import replace
from pathlib import Path

from autoscaling import wake, workload
from autoscaling.startup import MB, NEW_IMAGE, OLD_IMAGE, StartupModel


def test_the_smaller_image_wakes_sooner() -> None:
    old, new = wake.compare(seed=7, traces=sorted(workload.PATTERNS))
    assert old.image == OLD_IMAGE and new.image == NEW_IMAGE
    assert old.wakes > 0 and new.wakes > 0  # same uploads; only the start-up differs
    assert new.wake_p50_s is not None and old.wake_p50_s is not None
    assert new.wake_p95_s is not None and old.wake_p95_s is not None
    assert new.wake_p50_s < old.wake_p50_s
    assert new.wake_p95_s < old.wake_p95_s


def test_task_start_is_provisioning_plus_pull_plus_container_start() -> None:
    model = StartupModel(OLD_IMAGE)
    assert model.pull_s == OLD_IMAGE.compressed_bytes / (25 * MB)
    assert abs(model.mean_s - 60.0) < 1e-9  # calibrated: the old image keeps the old constant
    slower = replace(model, pull_bytes_per_s=5 * MB)
    draws = [slower.sample_s(random.Random(i)) - model.sample_s(random.Random(i)) for i in range(5)]
    assert all(abs(d - (slower.pull_s - model.pull_s)) < 1e-9 for d in draws)


def test_main_writes_the_side_by_side_table(tmp_path: Path) -> None:
    assert wake.main(["--out", str(tmp_path)]) == 0
    table = (tmp_path / "wake.md").read_text()
    assert "| Debian ffmpeg package |" in table and "| minimal ffmpeg build |" in table
    assert "wake p95" in table
