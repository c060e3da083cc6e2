"""Scratch space: what a killed worker leaves behind is removed by the next one to start.

A real second process holds a scratch root, is killed with SIGKILL, and its root is swept; a live
holder's root is never touched.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from transcoder.runtime.scratch import ScratchSpace

HOLDER = """
import sys, time
from pathlib import Path
from transcoder.runtime.scratch import ScratchSpace
space = ScratchSpace.claim(Path(sys.argv[1]), "holder")
(space.root / "job-1").mkdir()
(space.root / "job-1" / "720p.mp4").write_bytes(b"half an encode")
print("ready", flush=True)
time.sleep(60)
"""


def start_holder(base: Path) -> subprocess.Popen[str]:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(base)], stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout is not None
    assert holder.stdout.readline().strip() == "ready"
    return holder


def test_a_live_holder_is_left_alone_and_a_killed_one_is_swept(tmp_path: Path) -> None:
    holder = start_holder(tmp_path)
    mine = ScratchSpace.claim(tmp_path, "me")
    try:
        assert mine.sweep() == []
        assert (tmp_path / "holder" / "job-1" / "720p.mp4").exists()
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(timeout=10)
        assert mine.sweep() == [tmp_path / "holder"]
        assert sorted(p.name for p in tmp_path.iterdir()) == ["me", "me.lock"]
    finally:
        holder.kill()
        holder.wait()
        mine.close()
    assert list(tmp_path.iterdir()) == []  # a clean exit leaves nothing


def test_the_same_owner_twice_in_one_process_gets_two_roots(tmp_path: Path) -> None:
    first = ScratchSpace.claim(tmp_path, "worker/1")
    second = ScratchSpace.claim(tmp_path, "worker/1")
    assert first.root != second.root
    assert first.root.name == "worker_1"
    assert second.sweep() == []  # the first is alive (its lock is held)
    first.close()
    second.close()


def test_a_root_left_without_its_owner_is_swept_at_claim_time(tmp_path: Path) -> None:
    (tmp_path / "ghost").mkdir()
    (tmp_path / "ghost" / "partial.mp4").write_bytes(b"x")
    (tmp_path / "ghost.lock").touch()  # nobody holds it
    started = time.monotonic()
    space = ScratchSpace.claim(tmp_path, "new")
    assert space.sweep() == [tmp_path / "ghost"]
    assert time.monotonic() - started < 5
    space.close()
