"""structlog set-up: JSON lines on stderr, job fields bound through context variables.

Each job runs in its own asyncio task, and context variables are copied per task, so binding
``job_id``/``video_id``/``trace_id``/``attempt`` once in the job's task puts them on every line the
job logs, including lines from the adapters it calls.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING}
LEVELS["error"] = logging.ERROR


def configure(level: str = "info", *, json: bool = True) -> None:
    """Configure structlog once per process; safe to call again (the demo and tests do)."""
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if json
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(LEVELS.get(level, logging.INFO)),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )


def get_logger(name: str) -> Any:
    return structlog.get_logger(name)


bind_job = structlog.contextvars.bind_contextvars
clear_job = structlog.contextvars.clear_contextvars
