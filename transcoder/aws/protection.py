"""ECS task scale-in protection, through the container agent's endpoint.

ECS sets ``ECS_AGENT_URI`` in every container of a task; ``PUT $ECS_AGENT_URI/task-protection/v1/
state`` with ``{"ProtectionEnabled": bool, "ExpiresInMinutes": n}`` protects the task from
scale-in and deployments (or lifts the protection). The agent answers ``{"protection": {...}}`` on
success and ``{"failure": {...}}`` or ``{"error": {...}}`` otherwise.

How the worker uses it (``transcoder.runtime.worker``):

* while it has work, protection comes *before* each receive (and each job's liveness task renews
  it), so a task in the middle of a backlog is never chosen by scale-in between two jobs;
* a receive that comes back empty with nothing running releases it: an idle task long-polls
  unprotected, so scale-in can stop it (protecting before every long poll of an idle task would
  keep it protected almost all the time and scale-in would never find it);
* an idle task that receives work protects itself before it claims anything;
* refused: the messages just received are given back, and the worker receives nothing more until
  the agent grants protection (backing off between attempts).

A task that is not part of a service (``RunTask``) cannot be protected (the agent answers
``TASK_NOT_VALID``) and needs no protection from service scale-in: the client then stops asking.
Protection expires by itself (``ExpiresInMinutes``), so a hung worker cannot pin a task forever.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Callable
from typing import Any, Protocol

import aiohttp

from transcoder.logs import get_logger

log = get_logger(__name__)
STATE_PATH = "/task-protection/v1/state"
MAX_EXPIRY_MIN = 2_880  # the agent accepts 1 minute to 48 hours


class Protection(Protocol):
    """What the worker needs from scale-in protection."""

    @property
    def protected(self) -> bool:
        """Protection is in force now."""
        ...

    async def acquire(self) -> bool:
        """Make sure the task is protected for a while; False when the agent refused."""
        ...

    async def renew(self) -> None:
        """Called by liveness while a job runs; never raises."""
        ...

    async def release(self) -> None:
        """Lift the protection (the task is idle); never raises."""
        ...


class Unprotected:
    """Outside ECS (no ``ECS_AGENT_URI``): there is nothing to protect against."""

    protected = False

    async def acquire(self) -> bool:
        return True

    async def renew(self) -> None:
        return None

    async def release(self) -> None:
        return None


def expires_in_minutes(expires_s: float) -> int:
    return max(1, min(MAX_EXPIRY_MIN, math.ceil(expires_s / 60)))


def not_applicable(body: dict[str, Any]) -> bool:
    """The agent says this task is not part of a service, so scale-in cannot touch it."""
    failure = body.get("failure")
    return isinstance(failure, dict) and failure.get("Reason") == "TASK_NOT_VALID"


def granted(status: int, body: dict[str, Any], enabled: bool) -> bool:
    """Did the agent apply the requested state? (pure; the response shapes are the agent's)."""
    protection = body.get("protection")
    if status != 200 or not isinstance(protection, dict) or "failure" in body or "error" in body:
        return False
    return bool(protection.get("ProtectionEnabled")) is enabled


class TaskProtection:
    """The agent client; remembers until when the task is protected so renewals stay cheap.

    A renewal calls the agent only once less than half of the protection window is left.
    """

    def __init__(
        self,
        agent_uri: str,
        *,
        expires_s: float,
        timeout_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._url = agent_uri.rstrip("/") + STATE_PATH
        self._clock = clock
        self._minutes = expires_in_minutes(expires_s)
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._protected_until: float | None = None  # monotonic; None = not protected
        self._applicable = True  # False once the agent said TASK_NOT_VALID
        self._lock = asyncio.Lock()  # several slots may renew at once: one call is enough

    @property
    def protected(self) -> bool:
        return self.remaining_s() > 0

    def remaining_s(self) -> float:
        if self._protected_until is None:
            return 0.0
        return max(0.0, self._protected_until - self._clock())

    async def acquire(self) -> bool:
        async with self._lock:
            if not self._applicable:
                return True
            window_s = self._minutes * 60
            if self.remaining_s() > window_s / 2:
                return True
            started = self._clock()
            if not await self._put(enabled=True):
                return False
            if self._applicable:
                self._protected_until = started + window_s
            return True

    async def renew(self) -> None:
        if not await self.acquire():
            log.warning("protection.renew_refused", minutes=self._minutes)

    async def release(self) -> None:
        async with self._lock:
            if self._protected_until is None or not self._applicable:
                return
            if await self._put(enabled=False):
                self._protected_until = None

    async def _put(self, *, enabled: bool) -> bool:
        payload: dict[str, Any] = {"ProtectionEnabled": enabled}
        if enabled:
            payload["ExpiresInMinutes"] = self._minutes
        try:
            status, body = await self._request(payload)
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
            log.warning("protection.unreachable", enabled=enabled, error=repr(exc))
            return False
        if not_applicable(body):
            log.warning("protection.not_applicable", answer=body)
            self._applicable = False
            return enabled
        if not granted(status, body, enabled):
            log.warning("protection.refused", enabled=enabled, status=status, answer=body)
            return False
        log.info("protection.set", enabled=enabled, minutes=payload.get("ExpiresInMinutes"))
        return True

    async def _request(self, payload: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        async with (
            aiohttp.ClientSession(timeout=self._timeout) as session,
            session.put(self._url, json=payload) as response,
        ):
            text = await response.text()
        body = json.loads(text) if text.strip() else {}
        return response.status, body if isinstance(body, dict) else {}


def for_agent(agent_uri: str | None, *, expires_s: float) -> Protection:
    """``TaskProtection`` inside ECS, ``Unprotected`` elsewhere."""
    if not agent_uri:
        return Unprotected()
    return TaskProtection(agent_uri, expires_s=expires_s)
