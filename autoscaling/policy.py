"""The scaling policy: queue and fleet counts in, a desired task count out. Pure, no I/O.

The rules, in the order ``decide`` applies them:

1. **Busy floor.** Never ask for fewer tasks than may be busy. A busy task is one holding a message
   (in flight); the sampler cannot see which task holds which message, so every in-flight message
   is assumed to sit on its own running task: ``floor = max(busy, min(in_flight, running))``.
   Lowering ``desiredCount`` below that would make ECS pick a victim among busy tasks (task
   scale-in protection stops it, but then the scale-in stalls until a job ends).
2. **Wake.** One visible message with no task running or starting is enough to ask for a task:
   there is no threshold to cross and no metric to wait for. At zero, in-flight messages alone
   (retries waiting out their back-off) do not wake the fleet; they do once they are visible.
3. **Scale out on outstanding work.** ``outstanding = visible + in_flight``. A task runs
   ``jobs_per_task`` jobs at once and can leave ``floor(latency / job)`` more per slot waiting
   without breaking the acceptable queue latency, so each task absorbs
   ``jobs_per_task * (1 + floor(acceptable_latency_s / typical_job_s))`` outstanding messages.
4. **Quiet period.** When nothing is outstanding (no visible, in-flight or delayed message), keep
   one warm task until the queue has been empty for ``quiet_period_s``, then go to ``min_tasks``
   (0 by default). Idle tasks beyond the warm one are released at once; they cost money and a new
   burst is served by the wake path anyway.
5. **Bounds.** Never above ``max_tasks`` and never below ``min_tasks`` -- except that the busy
   floor wins over ``max_tasks`` (lowering ``max_tasks`` under load must not kill running jobs).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum


@dataclass(frozen=True, slots=True)
class PolicyConfig:
    """How the fleet should behave; defaults suit 1080p jobs of a few minutes each."""

    jobs_per_task: int = 1
    acceptable_latency_s: float = 300.0
    typical_job_s: float = 400.0
    min_tasks: int = 0
    max_tasks: int = 20
    quiet_period_s: float = 300.0

    def __post_init__(self) -> None:
        if self.jobs_per_task < 1:
            raise ValueError("jobs_per_task must be at least 1")
        if self.acceptable_latency_s < 0 or self.typical_job_s <= 0:
            raise ValueError("acceptable_latency_s must be >= 0 and typical_job_s > 0")
        if not 0 <= self.min_tasks <= self.max_tasks:
            raise ValueError("need 0 <= min_tasks <= max_tasks")
        if self.quiet_period_s < 0:
            raise ValueError("quiet_period_s must be >= 0")

    @property
    def messages_per_task(self) -> int:
        """Outstanding messages one task absorbs within the acceptable latency."""
        waiting_per_slot = math.floor(self.acceptable_latency_s / self.typical_job_s)
        return self.jobs_per_task * (1 + waiting_per_slot)


@dataclass(frozen=True, slots=True)
class Observation:
    """One sample of the queue and the service. ``empty_for_s`` is how long the queue has had no
    visible, in-flight or delayed message (0 when it has some now)."""

    visible: int
    in_flight: int
    delayed: int
    running: int
    desired: int
    busy: int
    empty_for_s: float

    def __post_init__(self) -> None:
        counts = (self.visible, self.in_flight, self.delayed, self.running, self.desired, self.busy)
        if min(counts) < 0 or self.empty_for_s < 0:
            raise ValueError("counts and empty_for_s must be non-negative")

    @property
    def outstanding(self) -> int:
        return self.visible + self.in_flight

    @property
    def queue_empty(self) -> bool:
        return self.outstanding == 0 and self.delayed == 0


class Reason(StrEnum):
    WAKE = "wake"
    SCALE_OUT = "scale_out"
    HOLD = "hold"
    SCALE_IN = "scale_in"
    QUIET = "quiet"
    TO_ZERO = "to_zero"
    BUSY_FLOOR = "busy_floor"


@dataclass(frozen=True, slots=True)
class Decision:
    """The desired count, the busy floor it respects and why it was chosen."""

    desired: int
    floor: int
    reason: Reason


def busy_floor(obs: Observation) -> int:
    """Tasks that may be running a job: never scale below this."""
    return max(obs.busy, min(obs.in_flight, obs.running))


def work_target(obs: Observation, config: PolicyConfig) -> int:
    """Tasks needed for the outstanding work, before bounds (>= 1 when anything is visible)."""
    return math.ceil(obs.outstanding / config.messages_per_task)


def idle_target(obs: Observation, config: PolicyConfig) -> int:
    """Nothing outstanding: one warm task through the quiet period, then nothing."""
    alive = obs.running > 0 or obs.desired > 0
    if alive and obs.empty_for_s < config.quiet_period_s:
        return 1
    return 0


def decide(obs: Observation, config: PolicyConfig) -> Decision:
    """The desired task count for this observation (see the module docstring for the rules)."""
    floor = busy_floor(obs)
    if obs.queue_empty:
        wanted = idle_target(obs, config)
    elif obs.running == 0 and obs.desired == 0:
        # At zero only visible work wakes the fleet: in-flight messages here are retries in
        # back-off (no task holds them); they wake it when they become visible again.
        wanted = work_target(obs, config) if obs.visible > 0 else 0
    else:
        wanted = max(work_target(obs, config), 1)
    bounded = min(config.max_tasks, max(config.min_tasks, wanted))
    desired = max(floor, bounded)
    return Decision(desired=desired, floor=floor, reason=reason_for(obs, desired, floor, bounded))


def reason_for(obs: Observation, desired: int, floor: int, bounded: int) -> Reason:
    if desired == floor and floor > bounded:
        return Reason.BUSY_FLOOR
    if obs.queue_empty:
        return Reason.TO_ZERO if desired == 0 else Reason.QUIET
    if obs.running == 0 and obs.desired == 0 and desired > 0:
        return Reason.WAKE
    if desired > obs.desired:
        return Reason.SCALE_OUT
    if desired < obs.desired:
        return Reason.SCALE_IN
    return Reason.HOLD
