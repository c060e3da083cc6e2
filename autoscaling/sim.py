"""A discrete-event model of one SQS queue and one ECS Fargate service. Seeded, no wall clock.

What it models, and the constants behind it:

- **Tasks** start after the desired count rises by provisioning + image pull + container start
  (``autoscaling/startup.py``: the pull follows the image's compressed size; by default the image
  the Dockerfile builds now). A started task long-polls, so it takes a visible message at once;
  one job per task.
- **Scale-in**: ECS stops surplus tasks still starting first. With task scale-in protection
  (``protection=True``: busy workers protect themselves) it then stops only idle tasks, and the
  rest of the surplus waits until a task finishes its job. Without protection, ECS picks among
  running tasks without knowing which are busy (uniformly at random here): a busy victim is a
  **busy kill**, and its message comes back when its visibility timeout (``VISIBILITY_S``) ends.
- **Billing**: per task from launch to stop, one-minute minimum (Fargate bills from image pull).
- **Idle cost**: task time more than ``IDLE_GRACE_S`` after the queue last had any work.
"""

from __future__ import annotations

import functools
import heapq
import itertools
import random
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import Enum

from autoscaling.startup import StartupModel
from autoscaling.workload import Upload

VISIBILITY_S = 600.0
IDLE_GRACE_S = 600.0
MIN_BILLED_S = 60.0
RECORD_EVERY_S = 60.0


class TaskState(Enum):
    STARTING = "starting"
    IDLE = "idle"
    BUSY = "busy"
    STOPPED = "stopped"


@dataclass(slots=True)
class Task:
    index: int
    launched_s: float
    state: TaskState = TaskState.STARTING
    job: int | None = None
    stopped_s: float | None = None
    attempt: int = 0


@dataclass(slots=True)
class JobState:
    upload: Upload
    start_s: float | None = None
    done_s: float | None = None
    kills: int = 0


@dataclass(frozen=True, slots=True)
class Counts:
    """What the control plane can see: SQS attributes and ECS counts."""

    visible: int
    in_flight: int
    running: int
    starting: int
    desired: int


@dataclass(slots=True)
class Record:
    """One row of the time series (every minute) for the plot."""

    t_s: float
    visible: int
    in_flight: int
    tasks: int


@dataclass(slots=True)
class Ledger:
    busy_kills: int = 0
    idle_task_s: float = 0.0
    wake_s: list[float] = field(default_factory=list)
    records: list[Record] = field(default_factory=list)


class Fleet:
    """The queue, the service and the clock. Controllers call ``at``, ``counts``,
    ``set_desired`` and ``on_arrival``."""

    def __init__(
        self,
        uploads: Sequence[Upload],
        rng: random.Random,
        *,
        protection: bool,
        horizon_s: float,
        startup: StartupModel | None = None,
    ) -> None:
        self.now = 0.0
        self.startup = startup or StartupModel()
        self.rng = rng
        self.protection = protection
        self.horizon_s = horizon_s
        self.jobs = [JobState(u) for u in uploads]
        self.tasks: list[Task] = []
        self._live: dict[TaskState, dict[int, Task]] = {
            TaskState.STARTING: {},
            TaskState.IDLE: {},
            TaskState.BUSY: {},
        }
        self.desired = 0
        self.ledger = Ledger()
        self._visible: deque[int] = deque()
        self._hidden = 0
        self._events: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = itertools.count()
        self._arrival_hooks: list[Callable[[], None]] = []
        self._empty_since: float | None = 0.0
        self._wake_started: float | None = None

    # -- the event loop -------------------------------------------------------------------------

    def at(self, t_s: float, action: Callable[[], None]) -> None:
        heapq.heappush(self._events, (t_s, next(self._seq), action))

    def on_arrival(self, hook: Callable[[], None]) -> None:
        self._arrival_hooks.append(hook)

    def run(self) -> None:
        for index, job in enumerate(self.jobs):
            self.at(job.upload.arrival_s, functools.partial(self._arrive, index))
        self.at(0.0, self._record)
        while self._events and self._events[0][0] <= self.horizon_s:
            t_s, _, action = heapq.heappop(self._events)
            self._account(t_s)
            self.now = t_s
            action()
            self._track_empty()
        self._account(self.horizon_s)
        self.now = self.horizon_s

    def _account(self, t_s: float) -> None:
        if self._empty_since is None:
            return
        idle_from = max(self.now, self._empty_since + IDLE_GRACE_S)
        if t_s > idle_from:
            self.ledger.idle_task_s += self.alive() * (t_s - idle_from)

    def _track_empty(self) -> None:
        outstanding = len(self._visible) + self.in_flight()
        if outstanding and self._empty_since is not None:
            self._empty_since = None
        elif not outstanding and self._empty_since is None:
            self._empty_since = self.now

    def _record(self) -> None:
        visible, in_flight = len(self._visible), self.in_flight()
        self.ledger.records.append(Record(self.now, visible, in_flight, self.alive()))
        self.at(self.now + RECORD_EVERY_S, self._record)

    # -- what the control plane sees ------------------------------------------------------------

    def in_flight(self) -> int:
        return self._count(TaskState.BUSY) + self._hidden

    def alive(self) -> int:
        return sum(len(tasks) for tasks in self._live.values())

    def _count(self, state: TaskState) -> int:
        return len(self._live[state])

    def _move(self, task: Task, state: TaskState) -> None:
        self._live[task.state].pop(task.index, None)
        task.state = state
        if state is not TaskState.STOPPED:
            self._live[state][task.index] = task

    def counts(self) -> Counts:
        running = self._count(TaskState.IDLE) + self._count(TaskState.BUSY)
        return Counts(
            visible=len(self._visible),
            in_flight=self.in_flight(),
            running=running,
            starting=self._count(TaskState.STARTING),
            desired=self.desired,
        )

    # -- the queue and the workers --------------------------------------------------------------

    def _arrive(self, index: int) -> None:
        if self.alive() == 0 and self._wake_started is None:
            self._wake_started = self.now
        self._visible.append(index)
        for hook in self._arrival_hooks:
            hook()
        self._dispatch()

    def _dispatch(self) -> None:
        idle = self._live[TaskState.IDLE]
        while self._visible and idle:
            self._start(next(iter(idle.values())), self._visible.popleft())

    def _start(self, task: Task, index: int) -> None:
        job = self.jobs[index]
        self._move(task, TaskState.BUSY)
        task.job, job.start_s = index, self.now
        task.attempt += 1
        if self._wake_started is not None:
            self.ledger.wake_s.append(self.now - self._wake_started)
            self._wake_started = None
        attempt = task.attempt
        self.at(self.now + job.upload.work_s, lambda: self._finish(task, attempt))

    def _finish(self, task: Task, attempt: int) -> None:
        if task.state is not TaskState.BUSY or task.attempt != attempt or task.job is None:
            return  # stopped (killed) before the job ended
        self.jobs[task.job].done_s = self.now
        self._move(task, TaskState.IDLE)
        task.job = None
        self._reconcile()
        self._dispatch()

    def _reappear(self, index: int) -> None:
        self._hidden -= 1
        self._visible.appendleft(index)
        self._dispatch()

    # -- the ECS service ------------------------------------------------------------------------

    def set_desired(self, count: int, *, warm: bool = False) -> None:
        """Set ``desiredCount``; ``warm`` starts new tasks already running (an always-on fleet)."""
        self.desired = max(0, count)
        self._reconcile(warm=warm)

    def _reconcile(self, *, warm: bool = False) -> None:
        surplus = self.alive() - self.desired
        for _ in range(-surplus):
            self._launch(warm)
        if surplus > 0:
            for task in self._victims(surplus):
                self._stop(task)

    def _launch(self, warm: bool) -> None:
        task = Task(index=len(self.tasks), launched_s=self.now)
        self.tasks.append(task)
        self._live[TaskState.STARTING][task.index] = task
        delay = 0.0 if warm else self.startup.sample_s(self.rng)
        self.at(self.now + delay, lambda: self._ready(task))

    def _ready(self, task: Task) -> None:
        if task.state is TaskState.STARTING:
            self._move(task, TaskState.IDLE)
            self._dispatch()

    def _victims(self, count: int) -> list[Task]:
        starting = list(reversed(self._live[TaskState.STARTING].values()))
        if self.protection:
            rest = list(reversed(self._live[TaskState.IDLE].values()))
        else:
            rest = [*self._live[TaskState.IDLE].values(), *self._live[TaskState.BUSY].values()]
            rest.sort(key=lambda task: task.index)
            self.rng.shuffle(rest)
        return (starting + rest)[:count]

    def _stop(self, task: Task) -> None:
        if task.state is TaskState.BUSY and task.job is not None:
            self.ledger.busy_kills += 1
            self.jobs[task.job].kills += 1
            self._hidden += 1
            index = task.job
            self.at(self.now + VISIBILITY_S, lambda: self._reappear(index))
        self._move(task, TaskState.STOPPED)
        task.job, task.stopped_s = None, self.now

    def wake_pending(self) -> bool:
        """A message arrived at zero tasks and no job has started since."""
        return self._wake_started is not None

    def billed_task_s(self) -> float:
        return sum(
            max(MIN_BILLED_S, (task.stopped_s or self.horizon_s) - task.launched_s)
            for task in self.tasks
        )
