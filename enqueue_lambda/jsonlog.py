"""One JSON object per log line, so CloudWatch Logs Insights can filter on every field.

The Lambda runtime installs a handler on the root logger; these loggers only set their level and
format the message. Locally (``transcoder submit``/``demo``) warnings still reach stderr.
"""

from __future__ import annotations

import json
import logging
from typing import Any


def get_logger(name: str) -> logging.Logger:
    logger = logging.getLogger(name)
    logger.setLevel(logging.INFO)
    return logger


def emit(logger: logging.Logger, level: int, event: str, **fields: Any) -> None:
    """Log ``{"event": event, **fields}`` as one line (non-ASCII keys stay readable)."""
    logger.log(level, json.dumps({"event": event, **fields}, default=str, ensure_ascii=False))
