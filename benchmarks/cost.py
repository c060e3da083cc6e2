"""Dollars per output minute on Fargate (x86 and ARM) next to MediaConvert's Basic tier.

List prices are constants dated below; check them before quoting a number to anyone.

* Fargate, Linux, us-east-1, on demand, per second: x86 $0.04048 per vCPU-hour and $0.004445 per
  GB-hour; ARM (Graviton) $0.03238 and $0.00356. Unchanged since the ARM launch (2021), still
  the published rates in March 2026.
* MediaConvert, on demand, Basic tier, us-east-1, first volume band: $0.0075 per normalized
  minute; an AVC HD output (720p to 1080p, up to 30 fps, single pass) counts 2, so
  **$0.015 per output minute** of each rendition (tiered "normalized minute" pricing of 2024-09).

An output minute is one minute of one rendition: a 30 s source encoded to 720p and 1080p is one
output minute, as MediaConvert bills it.

Fargate bills a task's configured vCPUs and memory for as long as it runs, so a worker that keeps
its task busy pays for CPU-seconds / vCPUs of task time. That is the estimate reported
(``busy``), from the CPU-seconds measured here. It assumes an ARM vCPU does the same work in the
same CPU time as this machine's x86 cores, which x264 on Graviton does not quite achieve: the
ARM figure is optimistic. ``wall`` bills the measured wall time of one job on a whole task
(a task that runs one job at a time at this machine's speed); on a contended machine it is
pessimistic.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

PRICES_AS_OF: Final = "2026-03"
REGION: Final = "us-east-1"
TASK_VCPU: Final = 2.0
TASK_MEMORY_GB: Final = 4.0


@dataclass(frozen=True, slots=True)
class FargateRate:
    name: str
    vcpu_hour_usd: float
    gb_hour_usd: float

    def task_hour_usd(self, vcpu: float = TASK_VCPU, memory_gb: float = TASK_MEMORY_GB) -> float:
        return vcpu * self.vcpu_hour_usd + memory_gb * self.gb_hour_usd


FARGATE_X86: Final = FargateRate("fargate-x86", 0.04048, 0.004445)
FARGATE_ARM: Final = FargateRate("fargate-arm", 0.03238, 0.00356)
MEDIACONVERT_BASIC_HD_USD_PER_MIN: Final = 0.0075 * 2


@dataclass(frozen=True, slots=True)
class Cost:
    """USD per output minute for one workload."""

    output_minutes: float
    busy: dict[str, float]  # rate name -> USD per output minute, task kept busy
    wall: dict[str, float]  # rate name -> USD per output minute, one job per task
    mediaconvert: float
    times_cheaper: float  # MediaConvert / Fargate x86 (busy)


def output_minutes(rendition_durations_s: list[float]) -> float:
    return sum(rendition_durations_s) / 60.0


def busy_usd(cpu_s: float, minutes: float, rate: FargateRate) -> float:
    """A task kept busy: CPU-seconds / vCPUs of task time per job."""
    task_s = cpu_s / TASK_VCPU
    return rate.task_hour_usd() * task_s / 3600.0 / minutes


def wall_usd(wall_s: float, minutes: float, rate: FargateRate) -> float:
    return rate.task_hour_usd() * wall_s / 3600.0 / minutes


def estimate(cpu_s: float, wall_s: float, rendition_durations_s: list[float]) -> Cost | None:
    """Cost of one job from its CPU-seconds and wall time; None without any output."""
    minutes = output_minutes(rendition_durations_s)
    if minutes <= 0:
        return None
    rates = (FARGATE_X86, FARGATE_ARM)
    busy = {r.name: busy_usd(cpu_s, minutes, r) for r in rates}
    wall = {r.name: wall_usd(wall_s, minutes, r) for r in rates}
    cheapest = busy[FARGATE_X86.name]
    ratio = MEDIACONVERT_BASIC_HD_USD_PER_MIN / cheapest if cheapest > 0 else float("inf")
    return Cost(minutes, busy, wall, MEDIACONVERT_BASIC_HD_USD_PER_MIN, ratio)
