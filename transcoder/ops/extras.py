"""What ``transcoder demo`` needs beyond the worker: the sample fetcher and the embedded emulator.

A source checkout has both (``samples/`` and ``moto[server]`` from the dev dependencies). The
container image ships the worker only: the emulator and the sample footage would add more than
the rest of the image to every task start. There, ``demo`` needs videos and an endpoint, and
these checks say exactly that instead of failing deep inside an import or a child process.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import NoReturn

IN_THE_IMAGE = (
    "In the container image pass videos and an endpoint, e.g. "
    'docker run --rm -v "$PWD:/videos:ro" -e AWS_ENDPOINT_URL=http://host.docker.internal:4566 '
    "transcoder demo /videos/clip.mp4 (the compose stack's LocalStack works; see README, Docker)."
)


def _missing(what: str) -> NoReturn:
    print(f"demo: {what}. {IN_THE_IMAGE}", file=sys.stderr)
    raise SystemExit(2)


def ensure_samples() -> dict[str, Path]:
    """The sample clips by name (fetched and cached), or exit 2 naming what to pass instead."""
    if importlib.util.find_spec("samples") is None:
        _missing("no videos given and the sample fetcher (samples/) is not installed here")
    from samples import ensure_samples as fetch

    return fetch()


def require_emulator() -> None:
    """Exit 2 naming what to pass when moto's server (the embedded emulator) is not installed."""
    if importlib.util.find_spec("moto") is None:
        _missing(
            "no AWS_ENDPOINT_URL set and the embedded emulator (moto[server]) is not installed here"
        )
