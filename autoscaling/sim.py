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
- **Messages**: each upload is one job message. With a ``planner`` (``autoscaling/chunks.py``)
  a long upload's job message fans out chunk and audio messages when it completes; the task that
  completes the last part runs the stitch still holding that part's message. Without one, the job
  message is the whole job (``Upload.work_s``), as the day simulation has always modelled it.
- **Spot** (``spot``, ``autoscaling/spot.py``): interruptions per task-hour, two minutes' notice
  (finish the current step within the grace period, else hand the message back at once), some
  without notice (the message comes back after ``VISIBILITY_S``), and the service replacing the
  task.
- **Dead letters** (``max_receives``, off unless set): a message received ``max_receives`` times
  that comes back after its visibility timeout goes to the DLQ and its job fails (the DLQ
  handler). A hand-back on the last allowed receive is re-sent as a new message, as the worker
  does (``GiveBack.resend``), so only losses without notice count towards the DLQ. The day
  simulation leaves it off: its figures predate it and it has no interruptions.
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

from autoscaling.chunks import JobPlan, PartKind, as_planned
from autoscaling.spot import SpotModel
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
    DRAINING = "draining"  # SIGTERM received (Spot notice), finishing its message, then stops
    STOPPED = "stopped"


@dataclass(slots=True)
class Task:
    index: int
    launched_s: float
    state: TaskState = TaskState.STARTING
    message: int | None = None
    stopped_s: float | None = None
    attempt: int = 0
    step_started_s: float = 0.0
    step_ends_s: float = 0.0
    stitching: bool = False
    notice_s: float | None = None


@dataclass(slots=True)
class Message:
    """One SQS message: a job's own, or a part it fanned out. ``done``: the part's output is
    recorded, so a redelivery costs only what follows it (the stitch)."""

    job: int
    kind: PartKind
    work_s: float
    done: bool = False
    receives: int = 0


@dataclass(slots=True)
class JobState:
    upload: Upload
    plan: JobPlan
    start_s: float | None = None
    done_s: float | None = None
    failed_s: float | None = None
    kills: int = 0
    parts_left: int = 0


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
    interruptions: int = 0
    handbacks: int = 0
    spot_kills: int = 0
    redone_s: float = 0.0
    dead_letters: int = 0


class Fleet:
    """The queue, the service and the clock. Controllers call ``at``, ``counts``,
    ``set_desired``, ``on_arrival`` and ``on_fan_out``."""

    def __init__(
        self,
        uploads: Sequence[Upload],
        rng: random.Random,
        *,
        protection: bool,
        horizon_s: float,
        startup: StartupModel | None = None,
        planner: Callable[[Upload], JobPlan] = as_planned,
        spot: SpotModel | None = None,
        spot_rng: random.Random | None = None,
        max_receives: int | None = None,
    ) -> None:
        self.now = 0.0
        self.startup = startup or StartupModel()
        self.rng = rng
        self.protection = protection
        self.horizon_s = horizon_s
        self.spot = spot
        self.spot_rng = spot_rng or random.Random(0)
        self.max_receives = max_receives
        self.jobs = [JobState(u, planner(u)) for u in uploads]
        self.messages: list[Message] = []
        self.tasks: list[Task] = []
        self._live: dict[TaskState, dict[int, Task]] = {
            state: {} for state in TaskState if state is not TaskState.STOPPED
        }
        self.desired = 0
        self.ledger = Ledger()
        self._visible: deque[int] = deque()
        self._hidden = 0
        self._events: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = itertools.count()
        self._arrival_hooks: list[Callable[[], None]] = []
        self._fan_out_hooks: list[Callable[[], None]] = []
        self._empty_since: float | None = 0.0
        self._wake_started: float | None = None

    # -- the event loop -------------------------------------------------------------------------

    def at(self, t_s: float, action: Callable[[], None]) -> None:
        heapq.heappush(self._events, (t_s, next(self._seq), action))

    def on_arrival(self, hook: Callable[[], None]) -> None:
        self._arrival_hooks.append(hook)

    def on_fan_out(self, hook: Callable[[], None]) -> None:
        self._fan_out_hooks.append(hook)

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
        return self._count(TaskState.BUSY) + self._count(TaskState.DRAINING) + self._hidden

    def alive(self) -> int:
        """Tasks launched and not yet stopped (billed), draining ones included."""
        return sum(len(tasks) for tasks in self._live.values())

    def _count(self, state: TaskState) -> int:
        return len(self._live[state])

    def _move(self, task: Task, state: TaskState) -> None:
        self._live[task.state].pop(task.index, None)
        task.state = state
        if state is not TaskState.STOPPED:
            self._live[state][task.index] = task

    def counts(self) -> Counts:
        running = sum(self._count(s) for s in (TaskState.IDLE, TaskState.BUSY, TaskState.DRAINING))
        return Counts(
            visible=len(self._visible),
            in_flight=self.in_flight(),
            running=running,
            starting=self._count(TaskState.STARTING),
            desired=self.desired,
        )

    # -- the queue and the workers --------------------------------------------------------------

    def _send(self, message: Message) -> None:
        self.messages.append(message)
        self._visible.append(len(self.messages) - 1)

    def _arrive(self, index: int) -> None:
        if self.alive() == 0 and self._wake_started is None:
            self._wake_started = self.now
        self._send(Message(index, PartKind.JOB, self.jobs[index].plan.job_s))
        for hook in self._arrival_hooks:
            hook()
        self._dispatch()

    def _dispatch(self) -> None:
        idle = self._live[TaskState.IDLE]
        while self._visible and idle:
            self._start(next(iter(idle.values())), self._visible.popleft())

    def _start(self, task: Task, index: int) -> None:
        message = self.messages[index]
        job = self.jobs[message.job]
        if job.done_s is not None or job.failed_s is not None:
            return  # the job has ended (a duplicate, or a part of a failed job): dropped
        self._move(task, TaskState.BUSY)
        task.message = index
        message.receives += 1
        if message.kind is PartKind.JOB:
            job.start_s = self.now
        if self._wake_started is not None:
            self.ledger.wake_s.append(self.now - self._wake_started)
            self._wake_started = None
        # A part already done comes back only when its stitch was lost: redo the stitch alone.
        work_s = job.plan.stitch_s if message.done else message.work_s
        self._begin(task, work_s, stitching=message.done)

    def _begin(self, task: Task, work_s: float, *, stitching: bool) -> None:
        task.attempt += 1
        task.step_started_s, task.step_ends_s, task.stitching = (
            self.now,
            self.now + work_s,
            stitching,
        )
        attempt = task.attempt
        self.at(task.step_ends_s, lambda: self._step_done(task, attempt))

    def _step_done(self, task: Task, attempt: int) -> None:
        if task.state not in (TaskState.BUSY, TaskState.DRAINING) or task.attempt != attempt:
            return  # stopped (killed or handed back) before the step ended
        assert task.message is not None
        message = self.messages[task.message]
        job = self.jobs[message.job]
        if task.stitching or not job.plan.chunked:
            job.done_s = self.now
        elif message.kind is PartKind.JOB:
            self._fan_out(message.job)
        else:
            message.done = True
            job.parts_left -= 1
            if job.parts_left == 0:
                self._stitch(task)
                return
        self._release(task)

    def _fan_out(self, index: int) -> None:
        plan = self.jobs[index].plan
        self.jobs[index].parts_left = len(plan.parts_s)
        for kind, work_s in zip(plan.part_kinds, plan.parts_s, strict=True):
            self._send(Message(index, kind, work_s))
        for hook in self._fan_out_hooks:
            hook()

    def _stitch(self, task: Task) -> None:
        """The last part is done: stitch on this task, unless a notice leaves too little time."""
        assert task.message is not None
        stitch_s = self.jobs[self.messages[task.message].job].plan.stitch_s
        if self._fits(task, stitch_s):
            self._begin(task, stitch_s, stitching=True)
        else:
            self._hand_back(task)

    def _fits(self, task: Task, work_s: float) -> bool:
        """Would ``work_s`` more end within the grace period of a notice (if there is one)?"""
        if task.notice_s is None or self.spot is None:
            return True
        return self.now + work_s <= task.notice_s + self.spot.grace_s

    def _release(self, task: Task) -> None:
        task.message = None
        if task.state is TaskState.DRAINING:
            self._retire(task)
        else:
            self._move(task, TaskState.IDLE)
            self._reconcile()
        self._dispatch()

    def _reappear(self, index: int) -> None:
        self._hidden -= 1
        message = self.messages[index]
        if self.max_receives is not None and message.receives >= self.max_receives:
            self.ledger.dead_letters += 1
            self.jobs[message.job].failed_s = self.now
            return
        self._visible.appendleft(index)
        self._dispatch()

    # -- the ECS service ------------------------------------------------------------------------

    def set_desired(self, count: int, *, warm: bool = False) -> None:
        """Set ``desiredCount``; ``warm`` starts new tasks already running (an always-on fleet)."""
        self.desired = max(0, count)
        self._reconcile(warm=warm)

    def _reconcile(self, *, warm: bool = False) -> None:
        # A draining task is already stopping: ECS no longer counts it towards the desired count.
        surplus = self.alive() - self._count(TaskState.DRAINING) - self.desired
        for _ in range(-surplus):
            self._launch(warm)
        if surplus > 0:
            for task in self._victims(surplus):
                if task.state is TaskState.BUSY:
                    self.ledger.busy_kills += 1
                self._retire(task)

    def _launch(self, warm: bool) -> None:
        task = Task(index=len(self.tasks), launched_s=self.now)
        self.tasks.append(task)
        self._live[TaskState.STARTING][task.index] = task
        delay = 0.0 if warm else self.startup.sample_s(self.rng)
        self.at(self.now + delay, lambda: self._ready(task))
        if self.spot is not None:
            interrupt_at = self.now + self.spot.next_interruption_s(self.spot_rng)
            if interrupt_at <= self.horizon_s:
                self.at(interrupt_at, lambda: self._interrupt(task))

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

    def _retire(self, task: Task) -> None:
        """Stop the task; a message still in hand comes back after its visibility timeout."""
        if task.message is not None:
            self.jobs[self.messages[task.message].job].kills += 1
            self.ledger.redone_s += self.now - task.step_started_s
            self._hidden += 1
            index = task.message
            self.at(self.now + VISIBILITY_S, lambda: self._reappear(index))
        self._move(task, TaskState.STOPPED)
        task.message, task.stopped_s = None, self.now

    # -- Fargate Spot ---------------------------------------------------------------------------

    def interrupt(self, index: int) -> None:
        """A Spot interruption of task ``index`` now (the Poisson draws call the same path)."""
        self._interrupt(self.tasks[index])

    def _interrupt(self, task: Task) -> None:
        if task.state in (TaskState.STOPPED, TaskState.DRAINING) or self.spot is None:
            return
        self.ledger.interruptions += 1
        if not self.spot.with_notice(self.spot_rng):
            self.ledger.spot_kills += int(task.message is not None)
            self._retire(task)
        elif task.state is TaskState.BUSY:
            task.notice_s = self.now
            if self._fits(task, task.step_ends_s - self.now):
                self._move(task, TaskState.DRAINING)
                self.at(self.now + self.spot.notice_s, lambda: self._deadline(task))
            else:
                self._hand_back(task)
        else:
            self._retire(task)  # starting or idle: the worker exits at once
        self._reconcile()
        self._dispatch()

    def _hand_back(self, task: Task) -> None:
        """SIGTERM with too little time left: the message is visible again at once."""
        assert task.message is not None
        message = self.messages[task.message]
        self.ledger.handbacks += 1
        if task.stitching or not message.done:
            self.ledger.redone_s += self.now - task.step_started_s
        if self.max_receives is not None and message.receives >= self.max_receives:
            message.receives = 0  # re-sent as a new message, so the hand-back never dead-letters
        self._visible.appendleft(task.message)
        task.message = None
        self._retire(task)
        self._dispatch()

    def _deadline(self, task: Task) -> None:
        """``notice_s`` after SIGTERM ECS stops the task whatever it is doing (SIGKILL)."""
        if task.state is TaskState.DRAINING:
            self._retire(task)
            self._reconcile()

    def wake_pending(self) -> bool:
        """A message arrived at zero tasks and no job has started since."""
        return self._wake_started is not None

    def billed_task_s(self) -> float:
        return sum(max(MIN_BILLED_S, self._ended_s(task) - task.launched_s) for task in self.tasks)

    def _ended_s(self, task: Task) -> float:
        return self.horizon_s if task.stopped_s is None else task.stopped_s
