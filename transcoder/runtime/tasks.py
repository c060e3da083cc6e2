"""``all_or_none``: ``asyncio.gather`` that stops the others when one fails.

Plain ``gather`` leaves the siblings of a failed awaitable running: an upload that fails would
let the job's other uploads go on reading scratch files the pipeline is already removing, and
writing objects after the job was handed back. ``TaskGroup`` cancels them but raises an
``ExceptionGroup``, which would hide the typed error the worker's decision needs. This cancels
the rest, waits for them, and re-raises the first failure as it was.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")


async def all_or_none(*work: Awaitable[T]) -> list[T]:
    """Every result in order, or the first failure once every other task has stopped."""
    tasks = [asyncio.ensure_future(w) for w in work]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
