"""Simulate a day of uploads under each scaling policy and report latency, safety and cost.

    python -m autoscaling.simulate [--seed 7] [--out autoscaling/results]
    python -m autoscaling.simulate --scenario long-upload [--seed 7] [--runs 200] [--chunk-s 30]

Writes ``simulation.md`` (tables), ``simulation.json`` (every number) and ``simulation.png``
(queue depth and task count over the nominal day) and prints the tables. Deterministic for a
seed; runs in a few seconds. The models are described in ``autoscaling/workload.py``,
``autoscaling/sim.py`` and ``autoscaling/controllers.py``. ``--scenario long-upload`` runs
``autoscaling/publish.py`` instead: time to publish and cost of chunked jobs, on-demand and Spot.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from autoscaling import sim, workload
from autoscaling.chunks import ChunkCosts
from autoscaling.controllers import AlwaysOn, Controller, Sampler, TargetTracking
from autoscaling.policy import PolicyConfig
from autoscaling.report import Summary, plot, summarize, table, write_json

DEFAULT_OUT = Path(__file__).parent / "results"
POLICY = PolicyConfig(
    jobs_per_task=1,
    acceptable_latency_s=300.0,
    typical_job_s=400.0,
    min_tasks=0,
    max_tasks=20,
    quiet_period_s=300.0,
)
ALWAYS_ON_TASKS = 6  # about 1.5x the nominal day's peak concurrency (~4 busy tasks)
OURS = "ours: sampler + upload wake"
PLOTTED = (OURS, "target tracking + wake alarm", f"always on ({ALWAYS_ON_TASKS} tasks)")


def controllers(policy: PolicyConfig) -> list[Controller]:
    # AWS guidance for SQS: target backlog per task = acceptable latency / processing time.
    target = policy.acceptable_latency_s / policy.typical_job_s
    return [
        Sampler(OURS, policy),
        Sampler("ours: 1-min sampler only", policy, upload_wake=False),
        Sampler("ours without task protection", policy, protection=False),
        TargetTracking(
            "target tracking + wake alarm", target, wake_alarm=True, max_tasks=policy.max_tasks
        ),
        TargetTracking(
            "target tracking + wake alarm + task protection",
            target,
            wake_alarm=True,
            max_tasks=policy.max_tasks,
            protection=True,
        ),
        TargetTracking(
            "target tracking alone (min 0)", target, wake_alarm=False, max_tasks=policy.max_tasks
        ),
        AlwaysOn(f"always on ({ALWAYS_ON_TASKS} tasks)", ALWAYS_ON_TASKS),
    ]


def run_one(
    trace: str, uploads: Sequence[workload.Upload], controller: Controller, seed: int
) -> sim.Fleet:
    rng = random.Random(f"{seed}:{trace}:{controller.name}")
    fleet = sim.Fleet(uploads, rng, protection=controller.protection, horizon_s=workload.DAY_S)
    controller.attach(fleet, rng)
    fleet.run()
    return fleet


def simulate(
    seed: int, traces: Sequence[str], policy: PolicyConfig = POLICY
) -> tuple[list[Summary], dict[str, list[sim.Record]]]:
    """Every policy on every trace; the nominal trace's time series for the plot."""
    summaries: list[Summary] = []
    series: dict[str, list[sim.Record]] = {}
    for trace in traces:
        uploads = workload.trace(trace, seed)
        for controller in controllers(policy):
            fleet = run_one(trace, uploads, controller, seed)
            summaries.append(summarize(trace, controller.name, fleet))
            if trace == workload.NOMINAL and controller.name in PLOTTED:
                series[controller.name] = fleet.ledger.records
    return summaries, series


def markdown(summaries: Sequence[Summary], traces: Sequence[str], command: str) -> str:
    parts = [f"Made by `{command}`.", ""]
    for trace in traces:
        rows = [s for s in summaries if s.trace == trace]
        nominal = " (nominal)" if trace == workload.NOMINAL else ""
        parts.append(table(rows, f"{trace}{nominal}: {rows[0].jobs} uploads in 24 h"))
    return "\n".join(parts)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m autoscaling.simulate", description=__doc__)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="directory for the outputs")
    parser.add_argument(
        "--trace", action="append", choices=sorted(workload.PATTERNS), help="repeatable"
    )
    parser.add_argument("--no-plot", action="store_true")
    parser.add_argument(
        "--scenario",
        choices=("day", "long-upload"),
        default="day",
        help="day: every policy over whole days; long-upload: chunked jobs, Spot, time to publish",
    )
    parser.add_argument("--runs", type=int, default=200, help="long-upload: repetitions")
    parser.add_argument(
        "--chunk-s", type=float, default=ChunkCosts().chunk_s, help="long-upload: source s/chunk"
    )
    args = parser.parse_args(argv)
    if args.scenario == "long-upload":
        from autoscaling import publish  # it imports this module's policy

        return publish.run(args)
    traces = args.trace or [workload.NOMINAL, "steady", "bursts", "idle_gap"]
    command = f"python -m autoscaling.simulate --seed {args.seed}"
    started = time.perf_counter()
    summaries, series = simulate(args.seed, traces)
    args.out.mkdir(parents=True, exist_ok=True)
    text = markdown(summaries, traces, command)
    (args.out / "simulation.md").write_text(text)
    meta = {"command": command, "seed": args.seed, "policy": asdict(POLICY), "traces": traces}
    write_json(args.out / "simulation.json", summaries, meta)
    if series and not args.no_plot:
        title = f"{workload.NOMINAL} day, seed {args.seed}: queue depth and tasks"
        plot(args.out / "simulation.png", series, title)
    print(text)
    print(f"({time.perf_counter() - started:.1f} s; outputs in {args.out})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
