"""Fargate Spot as the simulator models it: interruptions, their notice, and the price.

- **Interruptions** arrive per running task as a Poisson process, ``rate_per_task_h`` per
  task-hour from launch (a parameter: AWS publishes no Fargate Spot rate; 0.05 is a calm region,
  1.0 a stress value). Each draw is independent of the rest of the simulation (its own seeded
  generator), so an on-demand run and a Spot run see the same uploads and start-up draws.
- **Notice**: ECS sends SIGTERM and stops the task ``notice_s`` (120 s, Fargate's maximum
  ``stopTimeout`` and Spot's two-minute warning) later. The worker stops receiving; a message in
  hand whose current step ends within ``grace_s`` (``TRANSCODER_SHUTDOWN_GRACE_S``, 100 s) is
  finished, otherwise it is handed back at once (visibility 0: another task takes it now) and
  only that message's work is redone. The worker's estimate of the time left is taken as exact.
- **No notice**: a ``no_notice_fraction`` of interruptions is a SIGKILL-style loss (a host
  failure, an OOM kill): the message comes back when its visibility timeout (600 s) ends.
- **Replacement**: the service starts a replacement as soon as ECS stops counting the
  interrupted task, i.e. at the notice; it starts like any task (``autoscaling/startup.py``).
- **Price**: ``price_factor`` x on-demand (0.3: Fargate Spot has run about 70 % below on-demand;
  it varies by region and hour, and is not re-checked from this offline machine).
"""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class SpotModel:
    """Interruption rate, notice and price of Fargate Spot (see the module docstring)."""

    rate_per_task_h: float = 0.05
    notice_s: float = 120.0
    grace_s: float = 100.0
    no_notice_fraction: float = 0.1
    price_factor: float = 0.3

    def __post_init__(self) -> None:
        if self.rate_per_task_h < 0 or not 0 <= self.no_notice_fraction <= 1:
            raise ValueError("need rate_per_task_h >= 0 and 0 <= no_notice_fraction <= 1")
        if not 0 <= self.grace_s <= self.notice_s:
            raise ValueError("need 0 <= grace_s <= notice_s")

    def next_interruption_s(self, rng: random.Random) -> float:
        """Seconds from now to this task's next interruption (infinite when the rate is 0)."""
        if self.rate_per_task_h == 0:
            return float("inf")
        return rng.expovariate(self.rate_per_task_h / 3600.0)

    def with_notice(self, rng: random.Random) -> bool:
        return rng.random() >= self.no_notice_fraction
