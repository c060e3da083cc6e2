"""Simulated workloads: when uploads arrive and how long each transcode takes. Seeded, pure.

Job duration = source duration / encode speed + fixed overhead, with:

- **Source durations**: log-normal, median 150 s, sigma 0.9 (p95 about 11 minutes), capped at
  2 hours. User uploads are mostly short: Cheng, Dale & Liu, "Statistics and Social Network of
  YouTube Videos" (IWQoS 2008) measured most videos under 5 minutes, with a peak at 3-4 minutes
  and a long tail. Our median is a little shorter to reflect phone clips.
- **Encode speed**: 0.5-1.0x realtime (uniform) for one decode -> 720p + 1080p x264 ``veryfast``
  on a 2 vCPU Fargate task: the 1080p-on-2-cores range this project plans with (not measured by
  the simulator). ``benchmarks/`` and the ``transcoder_ffmpeg_speed_ratio`` histogram are the
  place to refine it.
- **Overhead**: 20 s per job (ffprobe over a presigned URL, verification, two uploads).

Arrival patterns over one day (all rates are uploads per hour):

- ``steady``: Poisson at 12/h around the clock.
- ``bursts``: 25 uploads within two minutes every 4 hours (a batch import), nothing between.
- ``diurnal``: the nominal day -- nothing from 23:00 to 07:00, then a sine-shaped rate peaking
  at 40/h mid-afternoon (about 400 uploads).
- ``idle_gap``: 15 uploads in the first hour, 12 hours of silence, 15 more, then silence:
  the queue goes inactive in CloudWatch (no API call for 6 hours), which delays SQS metrics.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass

DAY_S = 86_400.0
SOURCE_MEDIAN_S = 150.0
SOURCE_SIGMA = 0.9
SOURCE_MAX_S = 7_200.0
SPEED_REALTIME = (0.5, 1.0)
JOB_OVERHEAD_S = 20.0
NOMINAL = "diurnal"


@dataclass(frozen=True, slots=True)
class Upload:
    """One job: when its message becomes visible, how long a task takes to transcode it in a
    single pass on the day model's 2 vCPU task, and the source's duration (for the chunk model,
    ``autoscaling/chunks.py``, which costs it on its own terms)."""

    index: int
    arrival_s: float
    work_s: float
    source_s: float = 0.0


def job(rng: random.Random, index: int, arrival_s: float) -> Upload:
    source_s = min(SOURCE_MAX_S, rng.lognormvariate(math.log(SOURCE_MEDIAN_S), SOURCE_SIGMA))
    work_s = source_s / rng.uniform(*SPEED_REALTIME) + JOB_OVERHEAD_S
    return Upload(index, arrival_s, work_s, source_s)


def poisson_times(
    rng: random.Random, rate_per_h: float, start_s: float, end_s: float
) -> list[float]:
    times: list[float] = []
    t = start_s
    while True:
        t += rng.expovariate(rate_per_h / 3600.0)
        if t >= end_s:
            return times
        times.append(t)


def steady(rng: random.Random) -> list[float]:
    return poisson_times(rng, 12.0, 0.0, DAY_S)


def bursts(rng: random.Random) -> list[float]:
    starts = [hour * 3600.0 + 1800.0 for hour in range(0, 24, 4)]
    return sorted(start + rng.uniform(0, 120) for start in starts for _ in range(25))


def diurnal_rate(t_s: float) -> float:
    hour = t_s / 3600.0
    if not 7.0 <= hour < 23.0:
        return 0.0
    return 40.0 * math.sin(math.pi * (hour - 7.0) / 16.0)


def diurnal(rng: random.Random) -> list[float]:
    """A non-homogeneous Poisson process by thinning (Lewis & Shedler)."""
    candidates = poisson_times(rng, 40.0, 0.0, DAY_S)
    return [t for t in candidates if rng.random() < diurnal_rate(t) / 40.0]


def idle_gap(rng: random.Random) -> list[float]:
    first = sorted(rng.uniform(0, 3600) for _ in range(15))
    second = sorted(rng.uniform(13 * 3600, 14 * 3600) for _ in range(15))
    return first + second


PATTERNS: dict[str, Callable[[random.Random], list[float]]] = {
    "steady": steady,
    "bursts": bursts,
    "diurnal": diurnal,
    "idle_gap": idle_gap,
}


def trace(name: str, seed: int) -> list[Upload]:
    """The uploads of one pattern; the same (name, seed) gives the same list everywhere."""
    rng = random.Random(f"{seed}:trace:{name}")
    arrivals = PATTERNS[name](rng)
    return [job(rng, i, at) for i, at in enumerate(arrivals)]
