"""Summaries of simulated days: latency, wake time, busy kills, task-hours and dollars.

Prices: AWS Fargate on-demand, us-east-1, Linux, as listed on aws.amazon.com/fargate/pricing in
March 2026 (the rates have not changed since 2023). Not re-checked from this offline machine:
update ``PRICES_AS_OF`` with the numbers when you do.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from autoscaling.sim import Fleet, Record

PRICES_AS_OF = "2026-03"
X86_USD_PER_VCPU_H = 0.04048
X86_USD_PER_GB_H = 0.004445
ARM_USD_PER_VCPU_H = 0.03238
ARM_USD_PER_GB_H = 0.00356
TASK_VCPU = 2
TASK_GB = 4
X86_USD_PER_TASK_H = TASK_VCPU * X86_USD_PER_VCPU_H + TASK_GB * X86_USD_PER_GB_H
ARM_USD_PER_TASK_H = TASK_VCPU * ARM_USD_PER_VCPU_H + TASK_GB * ARM_USD_PER_GB_H


@dataclass(frozen=True, slots=True)
class Summary:
    """One policy on one trace. Waits are arrival -> start of the attempt that completed;
    ``None`` means some job never started (the percentile is unbounded)."""

    trace: str
    policy: str
    jobs: int
    completed: int
    never_started: int
    wait_p50_s: float | None
    wait_p95_s: float | None
    wait_max_s: float | None
    wakes: int
    wake_p50_s: float | None
    wake_max_s: float | None
    busy_kills: int
    task_hours: float
    idle_task_hours: float
    usd_per_day_x86: float
    usd_per_day_arm: float


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile; ``None`` for no values or an infinite result."""
    if not values:
        return None
    ordered = sorted(values)
    value = ordered[max(0, math.ceil(q * len(ordered)) - 1)]
    return None if math.isinf(value) else round(value, 1)


def summarize(trace: str, policy: str, fleet: Fleet) -> Summary:
    waits = [
        (job.start_s - job.upload.arrival_s) if job.start_s is not None else math.inf
        for job in fleet.jobs
    ]
    wakes = fleet.ledger.wake_s + ([math.inf] if fleet.wake_pending() else [])
    task_h = fleet.billed_task_s() / 3600.0
    day_fraction = fleet.horizon_s / 86_400.0
    return Summary(
        trace=trace,
        policy=policy,
        jobs=len(fleet.jobs),
        completed=sum(1 for job in fleet.jobs if job.done_s is not None),
        never_started=sum(1 for job in fleet.jobs if job.start_s is None),
        wait_p50_s=percentile(waits, 0.50),
        wait_p95_s=percentile(waits, 0.95),
        wait_max_s=percentile(waits, 1.0),
        wakes=len(wakes),
        wake_p50_s=percentile(wakes, 0.50),
        wake_max_s=percentile(wakes, 1.0),
        busy_kills=fleet.ledger.busy_kills,
        task_hours=round(task_h, 2),
        idle_task_hours=round(fleet.ledger.idle_task_s / 3600.0, 2),
        usd_per_day_x86=round(task_h * X86_USD_PER_TASK_H / day_fraction, 2),
        usd_per_day_arm=round(task_h * ARM_USD_PER_TASK_H / day_fraction, 2),
    )


def seconds(value: float | None) -> str:
    if value is None:
        return "never"
    if value >= 600:
        return f"{value / 60:.1f} min"
    return f"{value:.0f} s"


HEADER = (
    "| policy | wait p50 | wait p95 | wait max | wake p50 / max (n) | busy kills "
    "| task-hours | idle task-hours | $/day x86 | $/day ARM |\n"
    "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
)


def row(s: Summary) -> str:
    wake = f"{seconds(s.wake_p50_s)} / {seconds(s.wake_max_s)} ({s.wakes})" if s.wakes else "-"
    unstarted = f" ({s.never_started} never started)" if s.never_started else ""
    return (
        f"| {s.policy}{unstarted} | {seconds(s.wait_p50_s)} | {seconds(s.wait_p95_s)} "
        f"| {seconds(s.wait_max_s)} | {wake} | {s.busy_kills} | {s.task_hours:.1f} "
        f"| {s.idle_task_hours:.1f} | {s.usd_per_day_x86:.2f} | {s.usd_per_day_arm:.2f} |"
    )


def table(summaries: Sequence[Summary], title: str) -> str:
    return "\n".join([f"### {title}", "", HEADER, *(row(s) for s in summaries), ""])


def write_json(path: Path, summaries: Sequence[Summary], meta: dict[str, Any]) -> None:
    document = {
        **meta,
        "prices": {
            "as_of": PRICES_AS_OF,
            "region": "us-east-1",
            "task": {"vcpu": TASK_VCPU, "gb": TASK_GB},
            "x86_usd_per_task_hour": round(X86_USD_PER_TASK_H, 5),
            "arm_usd_per_task_hour": round(ARM_USD_PER_TASK_H, 5),
        },
        "results": [asdict(s) for s in summaries],
    }
    path.write_text(json.dumps(document, indent=2) + "\n")


# Over 40 lines: matplotlib's figure set-up is a list of calls; splitting it hides nothing.
def plot(path: Path, series: dict[str, list[Record]], title: str) -> None:
    """Queue depth and task count over the day, one panel per policy (matplotlib, Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(series), 1, figsize=(10, 2.2 * len(series)), sharex=True)
    for ax, (name, records) in zip(axes, series.items(), strict=True):
        hours = [r.t_s / 3600.0 for r in records]
        ax.fill_between(
            hours,
            [r.visible for r in records],
            step="post",
            alpha=0.35,
            color="tab:orange",
            label="waiting (visible)",
        )
        ax.step(
            hours,
            [r.visible + r.in_flight for r in records],
            where="post",
            color="tab:red",
            linewidth=0.8,
            label="visible + in flight",
        )
        ax.step(
            hours,
            [r.tasks for r in records],
            where="post",
            color="tab:blue",
            linewidth=1.2,
            label="tasks (starting + running)",
        )
        ax.set_title(name, fontsize=9, loc="left")
        ax.set_ylabel("count", fontsize=8)
        ax.tick_params(labelsize=8)
    axes[0].legend(fontsize=7, loc="upper left", ncols=3)
    axes[-1].set_xlabel("hour of the simulated day", fontsize=8)
    axes[-1].set_xticks(range(0, 25, 2))
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=72)
    plt.close(fig)
