"""A stand-in for the ECS container agent's task-protection endpoint, recording every call.

It speaks the agent's shapes: ``PUT /task-protection/v1/state`` with ``{"ProtectionEnabled":
bool, "ExpiresInMinutes": n}`` answers ``{"protection": {...}}`` when it grants the request,
``{"failure": {...}}`` when it refuses (``TASK_NOT_VALID`` for a task outside any service), or
HTTP 500 with ``{"error": {...}}``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

TASK_ARN = "arn:aws:ecs:us-east-1:123456789012:task/faults/0123456789abcdef"


@dataclass(frozen=True, slots=True)
class Call:
    at: float  # time.monotonic() when it arrived
    body: dict[str, Any]

    @property
    def enabled(self) -> bool:
        return bool(self.body.get("ProtectionEnabled"))


@dataclass
class Agent:
    """``mode``: "grant", "refuse" (a failure answer), "error" (HTTP 500) or "standalone" (the
    answer for a task outside any service); it can change at any time."""

    mode: str = "grant"
    calls: list[Call] = field(default_factory=list)
    url: str = ""
    _runner: web.AppRunner | None = None

    async def start(self) -> Agent:
        app = web.Application()
        app.router.add_put("/task-protection/v1/state", self._state)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = site._server.sockets[0].getsockname()[:2]  # type: ignore[union-attr]
        self.url = f"http://{host}:{port}"
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _state(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.calls.append(Call(time.monotonic(), body))
        if self.mode == "error":
            error = {"Arn": TASK_ARN, "Code": "ServerException", "Message": "agent trouble"}
            return web.json_response({"error": error}, status=500)
        if self.mode in ("refuse", "standalone"):
            reason = "TASK_NOT_VALID" if self.mode == "standalone" else "MISSING"
            failure = {"Arn": TASK_ARN, "Reason": reason, "Detail": None}
            return web.json_response({"failure": failure})
        protection = {"ProtectionEnabled": body.get("ProtectionEnabled"), "TaskArn": TASK_ARN}
        if body.get("ProtectionEnabled"):
            protection["ExpirationDate"] = "2030-01-01T00:00:00Z"
        return web.json_response({"protection": protection})
