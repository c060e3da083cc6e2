"""Time to publish and cost of a long upload: chunked or single pass, 8 tasks or 1, Spot or not.

    python -m autoscaling.simulate --scenario long-upload [--seed 7] [--runs 200]
    python -m autoscaling.publish [--seed 7] [--runs 200] [--out autoscaling/results]

Two tables (issue 15's fleet figures):

1. **One long upload at an idle fleet.** One 10-minute 1080p upload arrives at a fleet with zero
   tasks; our policy (``Sampler``: the one-minute sampler plus the upload wake, task protection
   on) scales the service, capped at ``max_tasks``. Time to publish is upload -> ``COMPLETED``;
   the cost is every task's billed time (start-up, the job, the quiet period before zero) at the
   1 vCPU / 2 GB task price, per minute of published video. ``--runs`` repetitions, each with its
   own start-up, sampler-phase and interruption draws; variants share the draws of a repetition.
2. **A day of uploads.** The nominal day (``diurnal`` trace, its source durations), the same
   policy with its usual bounds, chunking on or off, on-demand or Spot: the cost per minute of
   published video of a fleet kept busy, and time to publish p50/p95 over the day's uploads.

"Jobs lost" is uploads not ``COMPLETED`` at the horizon (dead-lettered: a message lost without
notice on its third receive, the queue's ``maxReceiveCount``; or not finished); it must be 0.
Costs come from ``autoscaling/chunks.py`` (measured and assumed figures, documented there), Spot
from ``autoscaling/spot.py``, start-up from ``autoscaling/startup.py``. Deterministic for a seed.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from autoscaling import sim, workload
from autoscaling.chunks import ChunkCosts
from autoscaling.controllers import Sampler
from autoscaling.report import X86_USD_PER_GB_H, X86_USD_PER_VCPU_H, percentile, seconds
from autoscaling.simulate import DEFAULT_OUT, OURS, POLICY
from autoscaling.spot import SpotModel
from autoscaling.workload import Upload

SOURCE_S = 600.0
HORIZON_S = 12 * 3600.0
GB_PER_VCPU = 2  # Fargate's smallest memory for 1 vCPU
STRESS_RATE_PER_TASK_H = 1.0
TARGET_SPEEDUP = 5.0
TARGET_COST_RATIO = 0.4
MAX_RECEIVES = 3  # the jobs queue's maxReceiveCount (deploy/template.yaml)
DEFAULT_COSTS = ChunkCosts()
USD = "usd_per_output_min"
CHUNK_JOB_S = 75.0  # one 30 s chunk of the default ladder on 1 vCPU (72.5 s) plus its overhead


@dataclass(frozen=True, slots=True)
class Variant:
    """One way to run the fleet: task cap, chunking, Spot (``None``: on-demand), and two levers
    that are not the default: the fan-out wake and a chunk-sized ``typical_job_s``."""

    name: str
    max_tasks: int
    chunked: bool
    spot: SpotModel | None = None
    fan_out_wake: bool = False
    typical_job_s: float | None = None


CALM, STRESS = SpotModel(), SpotModel(rate_per_task_h=STRESS_RATE_PER_TASK_H)
ON_DEMAND_SINGLE = "8 tasks, single pass, on-demand"
ONE_TASK_SINGLE = "1 task, single pass, on-demand"
EIGHT_CHUNKED = "8 tasks, chunked, on-demand"
LONG_UPLOAD = (
    Variant(ONE_TASK_SINGLE, 1, chunked=False),
    Variant("1 task, chunked, on-demand", 1, chunked=True),
    Variant(ON_DEMAND_SINGLE, 8, chunked=False),
    Variant(EIGHT_CHUNKED, 8, chunked=True),
    Variant("8 tasks, chunked, Spot 0.05/task-h", 8, chunked=True, spot=CALM),
    Variant(f"8 tasks, chunked, Spot {STRESS_RATE_PER_TASK_H:g}/task-h", 8, True, STRESS),
    Variant(f"8 tasks, single pass, Spot {STRESS_RATE_PER_TASK_H:g}/task-h", 8, False, STRESS),
    Variant("8 tasks, chunked, on-demand, fan-out wake (proposal)", 8, True, fan_out_wake=True),
)
DAY = (
    Variant("single pass, on-demand", POLICY.max_tasks, chunked=False),
    Variant("chunked, on-demand", POLICY.max_tasks, chunked=True),
    Variant("chunked, Spot 0.05/task-h", POLICY.max_tasks, chunked=True, spot=CALM),
    Variant(f"chunked, Spot {STRESS_RATE_PER_TASK_H:g}/task-h", POLICY.max_tasks, True, STRESS),
    Variant(
        f"single pass, Spot {STRESS_RATE_PER_TASK_H:g}/task-h", POLICY.max_tasks, False, STRESS
    ),
    Variant(
        f"chunked, Spot 0.05/task-h, TRANSCODER_SCALE_JOB_S={CHUNK_JOB_S:g}",
        POLICY.max_tasks,
        chunked=True,
        spot=CALM,
        typical_job_s=CHUNK_JOB_S,
    ),
)


@dataclass(frozen=True, slots=True)
class Outcome:
    """One variant over its runs (or its day). Times are upload -> ``COMPLETED``."""

    variant: str
    runs: int
    uploads: int
    jobs_lost: int
    publish_p50_s: float | None
    publish_p95_s: float | None
    publish_max_s: float | None
    tasks_launched: float
    task_hours: float
    usd_per_output_min: float
    interruptions: int
    handbacks: int
    lost_without_notice: int
    dead_letters: int
    redone_task_s: float


def task_usd_per_h(costs: ChunkCosts, spot: SpotModel | None) -> float:
    on_demand = costs.task_vcpu * (X86_USD_PER_VCPU_H + GB_PER_VCPU * X86_USD_PER_GB_H)
    return on_demand * (spot.price_factor if spot else 1.0)


def run_fleet(
    uploads: Sequence[Upload], variant: Variant, costs: ChunkCosts, key: str, horizon_s: float
) -> sim.Fleet:
    """One simulated run: ``key`` seeds the fleet and the interruptions (shared by variants)."""
    rng = random.Random(f"{key}:fleet")
    policy = replace(POLICY, max_tasks=variant.max_tasks)
    if variant.typical_job_s is not None:
        policy = replace(policy, typical_job_s=variant.typical_job_s)
    controller = Sampler(OURS, policy, fan_out_wake=variant.fan_out_wake)
    fleet = sim.Fleet(
        uploads,
        rng,
        protection=controller.protection,
        horizon_s=horizon_s,
        planner=replace(costs, enabled=variant.chunked).plan,
        spot=variant.spot,
        spot_rng=random.Random(f"{key}:spot"),
        max_receives=MAX_RECEIVES,
    )
    controller.attach(fleet, rng)
    fleet.run()
    return fleet


def outcome(variant: Variant, costs: ChunkCosts, fleets: Sequence[sim.Fleet]) -> Outcome:
    jobs = [job for fleet in fleets for job in fleet.jobs]
    times = [job.done_s - job.upload.arrival_s for job in jobs if job.done_s is not None]
    output_min = sum(job.upload.source_s for job in jobs if job.done_s is not None) / 60.0
    billed_h = sum(fleet.billed_task_s() for fleet in fleets) / 3600.0
    runs = len(fleets)
    return Outcome(
        variant=variant.name,
        runs=runs,
        uploads=len(jobs),
        jobs_lost=sum(1 for job in jobs if job.done_s is None),
        publish_p50_s=percentile(times, 0.50),
        publish_p95_s=percentile(times, 0.95),
        publish_max_s=percentile(times, 1.0),
        tasks_launched=round(sum(len(f.tasks) for f in fleets) / runs, 1),
        task_hours=round(billed_h / runs, 3),
        usd_per_output_min=round(billed_h * task_usd_per_h(costs, variant.spot) / output_min, 5)
        if output_min
        else float("inf"),
        interruptions=sum(f.ledger.interruptions for f in fleets),
        handbacks=sum(f.ledger.handbacks for f in fleets),
        lost_without_notice=sum(f.ledger.spot_kills for f in fleets),
        dead_letters=sum(f.ledger.dead_letters for f in fleets),
        redone_task_s=round(sum(f.ledger.redone_s for f in fleets) / runs, 1),
    )


def long_upload(seed: int, runs: int, costs: ChunkCosts = DEFAULT_COSTS) -> list[Outcome]:
    upload = Upload(0, 0.0, costs.single_pass_s(SOURCE_S), SOURCE_S)
    results = []
    for variant in LONG_UPLOAD:
        keys = [f"{seed}:long-upload:{run}" for run in range(runs)]
        fleets = [run_fleet([upload], variant, costs, key, HORIZON_S) for key in keys]
        results.append(outcome(variant, costs, fleets))
    return results


def day(seed: int, costs: ChunkCosts = DEFAULT_COSTS) -> list[Outcome]:
    uploads = workload.trace(workload.NOMINAL, seed)
    key = f"{seed}:day"
    horizon_s = workload.DAY_S + HORIZON_S  # let the last uploads finish
    return [
        outcome(variant, costs, [run_fleet(uploads, variant, costs, key, horizon_s)])
        for variant in DAY
    ]


def ratio(results: Sequence[Outcome], numerator: str, denominator: str, field: str) -> float:
    by_name = {r.variant: r for r in results}
    top, bottom = getattr(by_name[numerator], field), getattr(by_name[denominator], field)
    return round(top / bottom, 3) if top is not None and bottom else float("inf")


def verdict(value: float, target: float) -> str:
    return f"{value:.3f} (target <= {target:g}: {'met' if value <= target else 'NOT met'})"


def table(results: Sequence[Outcome], title: str) -> str:
    lines = [
        f"### {title}",
        "",
        "| variant | time to publish p50 / p95 / max | jobs lost | tasks launched | task-hours "
        "| $ per output minute | interruptions | handed back | lost without notice "
        "| dead-lettered | task-s redone |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        times = " / ".join(seconds(t) for t in (r.publish_p50_s, r.publish_p95_s, r.publish_max_s))
        lines.append(
            f"| {r.variant} | {times} | {r.jobs_lost} | {r.tasks_launched:g} | {r.task_hours:.3f} "
            f"| {r.usd_per_output_min:.5f} | {r.interruptions} | {r.handbacks} "
            f"| {r.lost_without_notice} | {r.dead_letters} | {r.redone_task_s:g} |"
        )
    return "\n".join([*lines, ""])


def targets(long: Sequence[Outcome], whole_day: Sequence[Outcome]) -> str:
    spot_long = "8 tasks, chunked, Spot 0.05/task-h"
    speedup = 1 / TARGET_SPEEDUP
    lines = [
        "### Targets (issue 15)",
        "",
        f"- 8 tasks chunked / 1 task single pass, time to publish p50: "
        f"{verdict(ratio(long, EIGHT_CHUNKED, ONE_TASK_SINGLE, 'publish_p50_s'), speedup)}",
        f"- 8 tasks chunked / 1 task chunked, time to publish p50: "
        f"{verdict(ratio(long, EIGHT_CHUNKED, LONG_UPLOAD[1].name, 'publish_p50_s'), speedup)}",
        f"- one upload, Spot 0.05 chunked / on-demand single pass, $ per output minute: "
        f"{verdict(ratio(long, spot_long, ON_DEMAND_SINGLE, USD), TARGET_COST_RATIO)}",
    ]
    for r in whole_day[2:]:
        if r.variant.startswith("chunked"):
            value = ratio(whole_day, r.variant, DAY[0].name, USD)
            lines.append(
                f"- day, {r.variant} / single pass on-demand, $ per output minute: "
                f"{verdict(value, TARGET_COST_RATIO)}"
            )
    rows = (*long, *whole_day)
    lost = sum(r.jobs_lost for r in rows if "chunked" in r.variant)
    single = sum(r.jobs_lost for r in rows if "chunked" not in r.variant)
    lines.append(
        f"- jobs lost, chunked rows: {lost} (target 0: {'met' if lost == 0 else 'NOT met'}); "
        f"single-pass rows, for comparison: {single}"
    )
    return "\n".join([*lines, ""])


def markdown(long: Sequence[Outcome], whole_day: Sequence[Outcome], command: str) -> str:
    runs = long[0].runs
    return "\n".join(
        [
            f"Made by `{command}`.",
            "",
            table(
                long, f"One {SOURCE_S / 60:g}-minute 1080p upload at an idle fleet ({runs} runs)"
            ),
            table(whole_day, f"The {workload.NOMINAL} day: {whole_day[0].uploads} uploads"),
            targets(long, whole_day),
        ]
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m autoscaling.publish", description=__doc__)
    add_arguments(parser)
    return run(parser.parse_args(argv))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = ChunkCosts()
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--runs", type=int, default=200, help="repetitions of the one upload")
    parser.add_argument("--chunk-s", type=float, default=defaults.chunk_s, help="source s/chunk")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="directory for the outputs")


def run(args: argparse.Namespace) -> int:
    """Both tables for ``args`` (seed, runs, chunk_s, out): ``publish.md``, ``publish.json``."""
    costs = replace(ChunkCosts(), chunk_s=args.chunk_s)
    command = (
        f"python -m autoscaling.simulate --scenario long-upload --seed {args.seed} "
        f"--runs {args.runs} --chunk-s {args.chunk_s:g}"
    )
    long, whole_day = long_upload(args.seed, args.runs, costs), day(args.seed, costs)
    text = markdown(long, whole_day, command)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "publish.md").write_text(text)
    document = {
        "command": command,
        "seed": args.seed,
        "costs": asdict(costs),
        "spot": {"calm": asdict(CALM), "stress": asdict(STRESS)},
        "long_upload": [asdict(r) for r in long],
        "day": [asdict(r) for r in whole_day],
    }
    (args.out / "publish.json").write_text(json.dumps(document, indent=2) + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
