"""Fast idle shutdown: ``stop`` cancels the open long poll instead of waiting it out.

The queue here is a long poll that answers only when it is told to (or never): the real SQS holds
a ``ReceiveMessage`` for up to ``WaitTimeSeconds`` (20 s), longer than ``docker stop`` waits.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from fakes import FakePipeline, FakeQueue, FakeStore, delivery, job
from test_worker_outcomes import make_worker

from transcoder.aws.queue import Delivery

# Far beyond what the worker may take to stop; the poll below would otherwise never end.
GENEROUS_S = 5.0


@dataclass
class LongPoll(FakeQueue):
    """A receive that waits until ``answer`` is set (never, by default), like an idle long poll."""

    answer: asyncio.Event = field(default_factory=asyncio.Event)
    polling: asyncio.Event = field(default_factory=asyncio.Event)
    cancelled: int = 0

    async def receive(self, max_messages: int, *, wait_s: int, visibility_s: int) -> list[Delivery]:
        self.receive_sizes.append(max_messages)
        self.polling.set()
        try:
            await self.answer.wait()
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        taken, self.inbox = self.inbox[:max_messages], self.inbox[max_messages:]
        return taken


async def test_stop_cancels_an_open_long_poll() -> None:
    queue = LongPoll()
    worker = make_worker(queue, FakeStore(), FakePipeline())
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    await asyncio.wait_for(queue.polling.wait(), GENEROUS_S)
    stop.set()
    await asyncio.wait_for(task, GENEROUS_S)  # without the cancel this waits forever
    assert queue.cancelled == 1
    assert queue.calls == []  # nothing was received, nothing to give back


class AnswersAsItStops(LongPoll):
    """The answer arrives in the same instant as the stop: the messages must not be dropped."""

    def __init__(self, stop: asyncio.Event, inbox: list[Delivery]) -> None:
        super().__init__(inbox=inbox)
        self._stop = stop

    async def receive(self, max_messages: int, *, wait_s: int, visibility_s: int) -> list[Delivery]:
        self._stop.set()
        taken, self.inbox = self.inbox[:max_messages], self.inbox[max_messages:]
        return taken


async def test_what_a_receive_returned_while_stopping_is_given_back_at_once() -> None:
    stop = asyncio.Event()
    queue = AnswersAsItStops(stop, [delivery(job().model_dump_json())])
    pipeline = FakePipeline()
    worker = make_worker(queue, FakeStore(), pipeline)
    await asyncio.wait_for(worker.run(stop), GENEROUS_S)
    assert pipeline.runs == 0
    assert queue.calls == [("visibility", 0)]
