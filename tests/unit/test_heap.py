"""The worker pins glibc's mmap threshold for itself (transcoder/heap.py)."""

from __future__ import annotations

import ctypes.util
import subprocess
import sys

import pytest

PROBE = """
import os
from transcoder import heap
before = dict(os.environ)
print(heap.bound(), dict(os.environ) == before)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt is Linux-only")
def test_bound_is_accepted_by_glibc_and_stays_in_the_worker_process() -> None:
    if ctypes.util.find_library("c") is None:
        pytest.skip("no C library found")
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True)
    # mallopt accepted both settings, and nothing reaches ffmpeg through the environment.
    assert out.stdout.split() == ["True", "True"]
