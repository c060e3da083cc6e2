"""Who sets the desired count in the simulation: this project's sampler, AWS target tracking
(with or without the usual step-scaling wake alarm), or nobody (an always-on fleet).

The target-tracking model follows what Application Auto Scaling documents and does:

- The metric is backlog per task = ``ApproximateNumberOfMessagesVisible`` (``AWS/SQS``) /
  running tasks, by metric math -- the AWS guidance for SQS. With no running task the division
  has no value: target tracking "does not perform scaling when the specified metric has
  insufficient data", and its adjustment is proportional to current capacity (0 x anything = 0),
  so **it cannot wake a service from zero**.
- ``AWS/SQS`` datapoints (one a minute) arrive 1-5 minutes late; after the queue has seen no API
  call for six hours SQS stops sending them, and when it is active again they resume up to
  15 minutes late (SQS developer guide, "Monitoring Amazon SQS queues using CloudWatch").
- The alarms target tracking creates: scale out after 3 datapoints above target (3 one-minute
  periods), scale in after 15 below 90 % of it; new capacity = ceil(capacity x metric / target).
  Cooldowns: 60 s out (the usual template value), 300 s in (the ECS default).
- The common wake fix is a step-scaling alarm on ``ApproximateNumberOfMessagesVisible >= 1`` for
  one minute that sets one task when the service is at zero; it sees the same late metric.
- No task scale-in protection: that is what the common templates ship.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Protocol

from autoscaling.policy import Observation, PolicyConfig, decide
from autoscaling.sim import Fleet
from autoscaling.state import MemoryClock

MINUTE_S = 60.0
SQS_LAG_S = (60.0, 300.0)
SQS_INACTIVE_AFTER_S = 6 * 3600.0
SQS_REACTIVATION_LAG_S = (300.0, 900.0)


class Controller(Protocol):
    name: str
    protection: bool

    def attach(self, fleet: Fleet, rng: random.Random) -> None: ...


@dataclass
class Sampler:
    """This project: ``autoscaling.policy.decide`` on direct reads every ``period_s``, plus the
    upload-event wake (EventBridge -> Lambda, ``wake_delay_s``) when ``upload_wake``.
    ``fan_out_wake`` (not built: a proposal for chunked jobs) also samples ``wake_delay_s`` after
    a job fans out its chunk messages, instead of at the next minute."""

    name: str
    policy: PolicyConfig
    upload_wake: bool = True
    period_s: float = 60.0
    wake_delay_s: float = 2.0
    protection: bool = True
    fan_out_wake: bool = False

    def attach(self, fleet: Fleet, rng: random.Random) -> None:
        clock = MemoryClock(max_gap_s=3 * self.period_s)

        def sample(pending: int) -> None:
            c = fleet.counts()
            visible = max(c.visible, pending)
            observation = Observation(
                visible=visible,
                in_flight=c.in_flight,
                delayed=0,
                running=c.running,
                desired=c.desired,
                busy=min(c.in_flight, c.running),
                empty_for_s=clock.observe(empty=visible + c.in_flight == 0, now=fleet.now),
            )
            fleet.set_desired(decide(observation, self.policy).desired)

        def tick() -> None:
            sample(0)
            fleet.at(fleet.now + self.period_s, tick)

        def wake() -> None:
            c = fleet.counts()
            if c.running == 0 and c.desired == 0:
                sample(1)

        fleet.at(rng.uniform(0, self.period_s), tick)
        if self.upload_wake:
            fleet.on_arrival(lambda: fleet.at(fleet.now + self.wake_delay_s, wake))
        if self.fan_out_wake:
            fleet.on_fan_out(lambda: fleet.at(fleet.now + self.wake_delay_s, lambda: sample(0)))


@dataclass
class AlwaysOn:
    """A fixed fleet, already running when the day starts."""

    name: str
    tasks: int
    protection: bool = True

    def attach(self, fleet: Fleet, rng: random.Random) -> None:
        fleet.at(0.0, lambda: fleet.set_desired(self.tasks, warm=True))


@dataclass
class Datapoint:
    minute: int
    visible: int
    running: int
    available_s: float


@dataclass
class SqsMetrics:
    """``AWS/SQS`` as CloudWatch serves it: late, and silent for an inactive queue."""

    rng: random.Random
    points: list[Datapoint] = field(default_factory=list)
    last_activity_s: float = 0.0
    reactivated_until_s: float = -1.0

    def activity(self, now: float) -> None:
        if now - self.last_activity_s > SQS_INACTIVE_AFTER_S:
            self.reactivated_until_s = now + self.rng.uniform(*SQS_REACTIVATION_LAG_S)
        self.last_activity_s = now

    def emit(self, now: float, visible: int, running: int) -> None:
        if now - self.last_activity_s > SQS_INACTIVE_AFTER_S:
            return  # an inactive queue sends no metrics
        available = now + self.rng.uniform(*SQS_LAG_S)
        if now < self.reactivated_until_s:
            available = max(available, self.reactivated_until_s)
        self.points.append(Datapoint(int(now // MINUTE_S), visible, running, available))

    def latest(self, now: float, count: int) -> list[Datapoint]:
        """The ``count`` most recent published datapoints, if they are recent enough to alarm on."""
        published = [p for p in self.points[-(count + 10) :] if p.available_s <= now]
        published.sort(key=lambda p: p.minute)
        recent = published[-count:]
        oldest_allowed = int(now // MINUTE_S) - count - 10
        if len(recent) < count or recent[0].minute < oldest_allowed:
            return []
        return recent


def backlog(points: list[Datapoint]) -> list[float]:
    """Visible / running per datapoint; empty (no data) if any has no running task."""
    if not points or any(p.running == 0 for p in points):
        return []
    return [p.visible / p.running for p in points]


@dataclass
class TargetTracking:
    """AWS target tracking on backlog per task (see the module docstring)."""

    name: str
    target: float
    wake_alarm: bool
    min_tasks: int = 0
    max_tasks: int = 20
    scale_out_cooldown_s: float = 60.0
    scale_in_cooldown_s: float = 300.0
    protection: bool = False
    _last_out_s: float = field(default=-1e9, init=False, repr=False)
    _last_in_s: float = field(default=-1e9, init=False, repr=False)

    def attach(self, fleet: Fleet, rng: random.Random) -> None:
        metrics = SqsMetrics(random.Random(rng.random()))
        fleet.on_arrival(lambda: metrics.activity(fleet.now))
        phase = rng.uniform(0, MINUTE_S)

        def minute() -> None:
            c = fleet.counts()
            if c.running > 0:  # long-polling workers keep the queue active
                metrics.activity(fleet.now)
            metrics.emit(fleet.now, c.visible, c.running)
            self.evaluate(fleet, metrics)
            fleet.at(fleet.now + MINUTE_S, minute)

        fleet.at(phase, minute)

    def evaluate(self, fleet: Fleet, metrics: SqsMetrics) -> None:
        now = fleet.now
        if self.wake_alarm and fleet.desired == 0:
            latest = metrics.latest(now, 1)
            if latest and latest[0].visible >= 1:
                fleet.set_desired(max(1, self.min_tasks))
                self._last_out_s = now
                return
        high = backlog(metrics.latest(now, 3))
        low = backlog(metrics.latest(now, 15))
        if high and min(high) > self.target:
            self.scale_out(fleet, high[-1])
        elif low and max(low) < 0.9 * self.target:
            self.scale_in(fleet, low[-1])

    def proportional(self, fleet: Fleet, metric: float) -> int:
        wanted = math.ceil(fleet.desired * metric / self.target)
        return min(self.max_tasks, max(self.min_tasks, wanted))

    def scale_out(self, fleet: Fleet, metric: float) -> None:
        wanted = self.proportional(fleet, metric)
        if wanted > fleet.desired and fleet.now - self._last_out_s >= self.scale_out_cooldown_s:
            fleet.set_desired(wanted)
            self._last_out_s = fleet.now

    def scale_in(self, fleet: Fleet, metric: float) -> None:
        wanted = self.proportional(fleet, metric)
        cooled = fleet.now - max(self._last_in_s, self._last_out_s) >= self.scale_in_cooldown_s
        if wanted < fleet.desired and cooled:
            fleet.set_desired(wanted)
            self._last_in_s = fleet.now
