"""The simulator: deterministic, and our policy meets the issue's bar on the nominal day."""

from __future__ import annotations

import functools
import json
import random
from pathlib import Path

import pytest

from autoscaling import simulate, workload
from autoscaling.report import Summary, percentile
from autoscaling.sim import VISIBILITY_S, Fleet
from autoscaling.workload import Upload

SEED = 7


@pytest.fixture(scope="module")
def nominal() -> dict[str, Summary]:
    summaries, _ = simulate.simulate(SEED, [workload.NOMINAL])
    return {s.policy: s for s in summaries}


def test_same_seed_same_numbers_other_seed_other_numbers() -> None:
    first, _ = simulate.simulate(SEED, ["idle_gap", "bursts"])
    again, _ = simulate.simulate(SEED, ["idle_gap", "bursts"])
    other, _ = simulate.simulate(SEED + 1, ["idle_gap", "bursts"])
    assert first == again
    assert first != other


def test_ours_never_kills_a_busy_task(nominal: dict[str, Summary]) -> None:
    assert nominal[simulate.OURS].busy_kills == 0


def test_ours_costs_nothing_while_idle(nominal: dict[str, Summary]) -> None:
    ours = nominal[simulate.OURS]
    assert ours.idle_task_hours == 0
    assert ours.task_hours < nominal[f"always on ({simulate.ALWAYS_ON_TASKS} tasks)"].task_hours


def test_ours_wakes_from_zero_within_90_seconds(nominal: dict[str, Summary]) -> None:
    ours = nominal[simulate.OURS]
    assert ours.wakes >= 3  # the nominal day has nights and lulls to wake from
    assert ours.wake_p50_s is not None
    assert ours.wake_p50_s < 90


def test_ours_keeps_p95_wait_within_the_configured_latency(nominal: dict[str, Summary]) -> None:
    ours = nominal[simulate.OURS]
    assert ours.never_started == 0
    assert ours.completed == ours.jobs
    assert ours.wait_p95_s is not None
    assert ours.wait_p95_s <= simulate.POLICY.acceptable_latency_s


def test_target_tracking_alone_never_wakes_from_zero(nominal: dict[str, Summary]) -> None:
    alone = nominal["target tracking alone (min 0)"]
    assert alone.never_started == alone.jobs
    assert alone.wait_p50_s is None


def test_scale_in_without_task_protection_kills_busy_tasks(nominal: dict[str, Summary]) -> None:
    assert nominal["target tracking + wake alarm"].busy_kills > 0
    assert nominal["ours without task protection"].busy_kills > 0


def test_main_writes_table_json_and_plot(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert simulate.main(["--seed", "3", "--out", str(tmp_path)]) == 0
    table = (tmp_path / "simulation.md").read_text()
    assert "python -m autoscaling.simulate --seed 3" in table
    assert "| ours: sampler + upload wake |" in table
    document = json.loads((tmp_path / "simulation.json").read_text())
    assert document["prices"]["as_of"] == "2026-03"
    assert {r["trace"] for r in document["results"]} == {"diurnal", "steady", "bursts", "idle_gap"}
    assert (tmp_path / "simulation.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "### diurnal (nominal)" in capsys.readouterr().out


def test_traces_are_seeded_and_shaped_as_documented() -> None:
    assert workload.trace("steady", 1) == workload.trace("steady", 1)
    night = [u for u in workload.trace("diurnal", 1) if u.arrival_s < 7 * 3600]
    assert night == []
    gap = [u.arrival_s for u in workload.trace("idle_gap", 1)]
    assert not [t for t in gap if 3600 < t < 13 * 3600]
    assert all(u.work_s > workload.JOB_OVERHEAD_S for u in workload.trace("bursts", 1))


def run_scale_in_during_a_job(*, protection: bool) -> Fleet:
    """One 1000 s job on one warm task; desired goes to 0 at 10 s and back to 1 at 20 s."""
    fleet = Fleet(
        [Upload(0, 0.0, 1_000.0)], random.Random(1), protection=protection, horizon_s=5_000
    )
    fleet.at(0.0, functools.partial(fleet.set_desired, 1, warm=True))
    fleet.at(10.0, functools.partial(fleet.set_desired, 0))
    fleet.at(20.0, functools.partial(fleet.set_desired, 1, warm=True))
    fleet.run()
    return fleet


def test_protection_spares_the_busy_task() -> None:
    fleet = run_scale_in_during_a_job(protection=True)
    assert fleet.ledger.busy_kills == 0
    assert fleet.jobs[0].start_s == 0.0
    assert fleet.jobs[0].done_s == 1_000.0


def test_without_protection_the_job_is_killed_and_comes_back_after_visibility() -> None:
    fleet = run_scale_in_during_a_job(protection=False)
    assert fleet.ledger.busy_kills == 1
    assert fleet.jobs[0].start_s == 10.0 + VISIBILITY_S


def test_percentile_is_nearest_rank_and_unbounded_when_jobs_never_start() -> None:
    assert percentile([1.0, 2.0, 3.0, 4.0], 0.5) == 2.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 0.95) == 4.0
    assert percentile([1.0, float("inf")], 1.0) is None
    assert percentile([], 0.5) is None
