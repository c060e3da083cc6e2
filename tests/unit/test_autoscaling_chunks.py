"""The fleet model of chunked jobs and Fargate Spot: costs, stitch, notice, loss, determinism."""

from __future__ import annotations

import functools
import json
import random
from collections.abc import Callable
from pathlib import Path

import pytest

from autoscaling import publish, simulate
from autoscaling.chunks import ChunkCosts, JobPlan, PartKind, as_planned
from autoscaling.controllers import Sampler
from autoscaling.policy import Observation, PolicyConfig, decide
from autoscaling.sim import VISIBILITY_S, Fleet
from autoscaling.spot import SpotModel
from autoscaling.workload import Upload

COSTS = ChunkCosts()
TEN_MINUTES = Upload(0, 0.0, COSTS.single_pass_s(600.0), 600.0)
NOTICE = SpotModel(rate_per_task_h=0.0, no_notice_fraction=0.0)
NO_NOTICE = SpotModel(rate_per_task_h=0.0, no_notice_fraction=1.0)


def test_a_long_upload_is_chunks_plus_audio_and_a_short_one_a_single_pass() -> None:
    plan = COSTS.plan(TEN_MINUTES)
    assert plan.part_kinds == (PartKind.CHUNK,) * 20 + (PartKind.AUDIO,)
    assert plan.parts_s[0] == pytest.approx(2.0 + 30 * 2.3 * 1.05)
    assert plan.parts_s[-1] == pytest.approx(2.0 + 600 * 0.02)
    assert plan.stitch_s == pytest.approx(600 * 0.05 + 10)
    assert plan.job_s == COSTS.probe_s
    short = Upload(1, 0.0, 0.0, 120.0)
    assert COSTS.plan(short) == JobPlan(job_s=5 + 120 * 2.3 + 120 * 0.05 + 10)
    assert not ChunkCosts(enabled=False).plan(TEN_MINUTES).chunked


def test_a_tail_shorter_than_one_gop_joins_the_chunk_before_it() -> None:
    assert COSTS.chunks_s(61.0) == [30.0, 31.0]
    assert COSTS.chunks_s(63.0) == [30.0, 30.0, 3.0]
    assert COSTS.chunks_s(60.0) == [30.0, 30.0]


def warm_fleet(
    upload: Upload, planner: Callable[[Upload], JobPlan], spot: SpotModel | None = None
) -> Fleet:
    """One task already running, desired 1, no controller: the timeline is exact."""
    fleet = Fleet([upload], random.Random(1), protection=True, horizon_s=20_000, planner=planner)
    fleet.spot = spot
    fleet.at(0.0, functools.partial(fleet.set_desired, 1, warm=True))
    return fleet


def test_the_stitch_runs_after_the_last_part_holding_its_message() -> None:
    upload = Upload(0, 0.0, 0.0, 150.0)
    plan = COSTS.plan(upload)
    fleet = warm_fleet(upload, COSTS.plan)
    end_s = plan.job_s + sum(plan.parts_s) + plan.stitch_s
    seen: list[int] = []
    fleet.at(end_s - 1.0, lambda: seen.append(fleet.counts().in_flight))
    fleet.run()
    assert fleet.jobs[0].done_s == pytest.approx(end_s)
    assert seen == [1]  # the busy floor sees the stitching task as busy
    assert len(fleet.messages) == 1 + len(plan.parts_s)


def test_chunking_disabled_reproduces_the_single_pass_run() -> None:
    variant = publish.Variant("x", 8, chunked=False)
    disabled = publish.run_fleet([TEN_MINUTES], variant, COSTS, "k", publish.HORIZON_S)
    rng = random.Random("k:fleet")
    controller = Sampler(simulate.OURS, simulate.POLICY)
    plain = Fleet([TEN_MINUTES], rng, protection=True, horizon_s=publish.HORIZON_S)
    controller.attach(plain, rng)
    plain.run()
    assert plain.jobs[0].plan == as_planned(TEN_MINUTES)
    assert disabled.jobs[0].done_s == plain.jobs[0].done_s
    assert disabled.billed_task_s() == plain.billed_task_s()


def test_eight_tasks_publish_a_long_upload_much_faster_than_one() -> None:
    one = publish.run_fleet([TEN_MINUTES], publish.LONG_UPLOAD[1], COSTS, "k", 40_000)
    eight = publish.run_fleet([TEN_MINUTES], publish.LONG_UPLOAD[3], COSTS, "k", 40_000)
    assert len(eight.tasks) == 8 and len(one.tasks) == 1
    one_s, eight_s = one.jobs[0].done_s, eight.jobs[0].done_s
    assert one_s is not None and eight_s is not None
    assert eight_s < 0.3 * one_s


def test_a_notice_the_task_cannot_meet_hands_the_message_back_at_once() -> None:
    fleet = warm_fleet(Upload(0, 0.0, 1_000.0), as_planned, NOTICE)
    fleet.at(10.0, functools.partial(fleet.interrupt, 0))
    fleet.run()
    assert fleet.ledger.handbacks == 1
    assert len(fleet.tasks) == 2  # the service replaced the interrupted task
    restart_s = fleet.jobs[0].start_s
    assert restart_s is not None and 10.0 < restart_s < 10.0 + VISIBILITY_S
    assert fleet.jobs[0].done_s == pytest.approx(restart_s + 1_000.0)
    assert fleet.ledger.redone_s == pytest.approx(10.0)


def test_a_notice_within_the_grace_period_finishes_the_message() -> None:
    fleet = warm_fleet(Upload(0, 0.0, 1_000.0), as_planned, NOTICE)
    fleet.at(950.0, functools.partial(fleet.interrupt, 0))
    fleet.run()
    assert fleet.ledger.handbacks == 0
    assert fleet.jobs[0].done_s == 1_000.0
    assert fleet.tasks[0].stopped_s == 1_000.0


def test_a_loss_without_notice_brings_the_message_back_after_the_visibility_timeout() -> None:
    fleet = warm_fleet(Upload(0, 0.0, 1_000.0), as_planned, NO_NOTICE)
    fleet.at(10.0, functools.partial(fleet.interrupt, 0))
    fleet.run()
    assert fleet.ledger.spot_kills == 1
    assert fleet.jobs[0].start_s == 10.0 + VISIBILITY_S


def test_a_chunk_finishes_inside_the_notice() -> None:
    plan = COSTS.plan(TEN_MINUTES)
    fleet = warm_fleet(TEN_MINUTES, COSTS.plan, NOTICE)
    fleet.at(plan.job_s + plan.parts_s[0] + 30.0, functools.partial(fleet.interrupt, 0))
    fleet.run()
    assert fleet.ledger.handbacks == 0
    assert fleet.ledger.redone_s == 0
    assert fleet.tasks[0].stopped_s == pytest.approx(plan.job_s + 2 * plan.parts_s[0])
    assert fleet.jobs[0].done_s is not None


def interrupt_three_holders(spot: SpotModel) -> Fleet:
    """A 1000 s single pass; the task holding it is interrupted three times, each replaced."""
    fleet = warm_fleet(Upload(0, 0.0, 1_000.0), as_planned, spot)
    fleet.max_receives = 3
    for index, at_s in enumerate(
        (10.0, 10.0 + VISIBILITY_S + 100.0, 10.0 + 2 * VISIBILITY_S + 300.0)
    ):
        fleet.at(at_s, functools.partial(fleet.interrupt, index))
    fleet.run()
    return fleet


def test_three_losses_without_notice_dead_letter_the_job() -> None:
    fleet = interrupt_three_holders(NO_NOTICE)
    assert fleet.ledger.spot_kills == 3
    assert fleet.ledger.dead_letters == 1
    assert fleet.jobs[0].done_s is None and fleet.jobs[0].failed_s is not None


def test_a_hand_back_on_the_last_receive_is_re_sent_and_never_dead_letters() -> None:
    fleet = interrupt_three_holders(NOTICE)
    assert fleet.ledger.handbacks == 3
    assert fleet.ledger.dead_letters == 0
    assert fleet.jobs[0].done_s is not None


def test_an_interrupted_chunk_that_cannot_finish_costs_only_that_chunk() -> None:
    long_chunks = ChunkCosts(chunk_s=60.0)  # 147 s of encode: more than the 100 s grace
    plan = long_chunks.plan(TEN_MINUTES)
    fleet = warm_fleet(TEN_MINUTES, long_chunks.plan, NOTICE)
    fleet.at(plan.job_s + plan.parts_s[0] + 30.0, functools.partial(fleet.interrupt, 0))
    fleet.run()
    assert fleet.ledger.handbacks == 1
    assert fleet.ledger.redone_s == pytest.approx(30.0)
    assert all(m.done for m in fleet.messages if m.kind is not PartKind.JOB)
    assert fleet.jobs[0].done_s is not None


def storm(chunk_s: float, key: str) -> Fleet:
    """Six long uploads, 8 tasks, one interruption every 3 minutes per task, 10 % no notice."""
    variant = publish.Variant("storm", 8, chunked=True, spot=SpotModel(rate_per_task_h=20.0))
    uploads = [Upload(i, 60.0 * i, 0.0, 300.0 + 100.0 * i) for i in range(6)]
    return publish.run_fleet(uploads, variant, ChunkCosts(chunk_s=chunk_s), key, 200_000)


@pytest.mark.parametrize("key", ["storm", "a", "b"])
def test_no_message_is_lost_under_a_storm_of_interruptions(key: str) -> None:
    fleet = storm(30.0, key)  # 30 s chunks finish inside the notice
    assert fleet.ledger.interruptions > 40 and fleet.ledger.spot_kills > 0
    assert all(job.done_s is not None for job in fleet.jobs)
    assert all(m.done for m in fleet.messages if m.kind is not PartKind.JOB)
    assert fleet.counts().visible == fleet.counts().in_flight == 0


def test_chunks_longer_than_the_grace_are_handed_back_and_can_dead_letter() -> None:
    fleet = storm(60.0, "storm")  # 147 s of encode per chunk: more than the 100 s grace
    assert fleet.ledger.handbacks > 0
    # Hand-backs use up receives; a loss without notice on the third dead-letters the chunk.
    assert fleet.ledger.dead_letters == 1
    assert all(job.done_s is not None or job.failed_s is not None for job in fleet.jobs)
    assert fleet.counts().visible == fleet.counts().in_flight == 0


def test_the_policy_counts_chunk_messages_as_work() -> None:
    fanned_out = Observation(
        visible=20, in_flight=1, delayed=0, running=1, desired=1, busy=1, empty_for_s=0
    )
    assert decide(fanned_out, PolicyConfig(max_tasks=8)).desired == 8
    chunk_sized = PolicyConfig(max_tasks=8, typical_job_s=75.0)  # 5 messages per task
    assert decide(fanned_out, chunk_sized).desired == 5


def test_the_report_is_deterministic_for_a_seed() -> None:
    assert publish.long_upload(3, 4) == publish.long_upload(3, 4)
    assert publish.long_upload(3, 4) != publish.long_upload(4, 4)


def test_the_long_upload_scenario_writes_markdown_and_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--scenario", "long-upload", "--runs", "3", "--seed", "5", "--out", str(tmp_path)]
    assert simulate.main(argv) == 0
    text = (tmp_path / "publish.md").read_text()
    assert "--scenario long-upload --seed 5 --runs 3" in text
    assert "| 8 tasks, chunked, on-demand |" in text
    assert "jobs lost, chunked rows: 0" in text
    document = json.loads((tmp_path / "publish.json").read_text())
    assert document["costs"]["cpu_per_source_s"] == 2.3
    chunked = [r for r in document["long_upload"] + document["day"] if "chunked" in r["variant"]]
    assert all(r["jobs_lost"] == 0 for r in chunked)
    assert "### Targets (issue 15)" in capsys.readouterr().out
