"""``transcoder demo`` as a user runs it: through a pipe, with ``--json``, and on a terminal.

Each run starts the embedded emulator and probes one file that is not a video (ffprobe only, a
few seconds), so what is checked is the output, not the transcode.
"""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
SUMMARY_FIELDS = {"file", "video_id", "job_id", "status", "attempts", "error", "renditions"}


@pytest.fixture
def broken(tmp_path: Path) -> Path:
    path = tmp_path / "broken.mp4"
    path.write_bytes(b"\x00" * 2048)
    return path


def demo_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "TRANSCODER_"))}
    return {**env, "TMPDIR": str(tmp_path), "TRANSCODER_LOG_LEVEL": "info"}


def demo(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "transcoder", "demo", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=demo_env(tmp_path),
        check=False,
    )


def test_through_a_pipe_the_demo_prints_plain_lines(broken: Path, tmp_path: Path) -> None:
    completed = demo(tmp_path, str(broken))
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert not ANSI.search(completed.stdout + completed.stderr)
    header, row = completed.stdout.splitlines()
    assert header.split() == ["file", "status", "tries", "renditions", "/", "error"]
    assert row.split()[:4] == ["broken.mp4", "FAILED", "1", "not_a_video:"]
    progress = [line for line in completed.stderr.splitlines() if line.startswith("[demo] ")]
    assert progress[-1] == "[demo] broken: FAILED"
    events = [json.loads(line)["event"] for line in completed.stderr.splitlines() if "{" in line]
    assert "job.settled" in events  # the logs stay on stderr, as JSON lines


def test_with_json_the_demo_prints_one_summary_per_file(broken: Path, tmp_path: Path) -> None:
    completed = demo(tmp_path, "--json", str(broken))
    assert completed.returncode == 0, completed.stderr[-2000:]
    (line,) = completed.stdout.splitlines()
    result = json.loads(line)
    assert line == json.dumps(result, sort_keys=True)
    assert (
        SUMMARY_FIELDS <= set(result) <= {*SUMMARY_FIELDS, "source", "hls", "poster", "thumbnails"}
    )
    assert (result["status"], result["error"]["code"]) == ("FAILED", "not_a_video")
    assert "[demo] broken: FAILED" in completed.stderr.splitlines()


def test_with_out_the_demo_writes_the_player_page_and_says_how_to_serve_it(
    broken: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    completed = demo(tmp_path, "--out", str(out), str(broken))
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert f"player page: {out / 'index.html'}" in completed.stdout.splitlines()
    assert f"python -m http.server -d {out} -b 127.0.0.1" in completed.stdout
    assert "nothing to play" in (out / "index.html").read_text()  # the one job FAILED
    assert (out / "hls.light.min.js").is_file()
    with_json = demo(tmp_path, "--json", "--out", str(out), str(broken))
    assert "player page:" not in with_json.stdout  # stdout stays JSON lines
    assert f"player page: {out / 'index.html'}" in with_json.stderr


def on_a_terminal(tmp_path: Path, *args: str) -> str:
    """Run the demo with a pseudo-terminal as stdin, stdout and stderr; its screen output."""
    controller, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    process = subprocess.Popen(
        [sys.executable, "-m", "transcoder", "demo", *args],
        stdin=terminal,
        stdout=terminal,
        stderr=terminal,
        env=demo_env(tmp_path),
    )
    os.close(terminal)
    output = b""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        ready, _, _ = select.select([controller], [], [], 0.5)
        if ready:
            try:
                chunk = os.read(controller, 65536)
            except OSError:  # the terminal closed: the demo has exited
                break
            output += chunk
        elif process.poll() is not None:
            break
    os.close(controller)
    assert process.wait(timeout=30) == 0, ANSI.sub("", output.decode(errors="replace"))
    return ANSI.sub("", output.decode(errors="replace"))


def test_on_a_terminal_the_demo_shows_a_live_table_and_logs_to_a_file(
    broken: Path, tmp_path: Path
) -> None:
    screen = on_a_terminal(tmp_path, str(broken))
    assert '"event"' not in screen  # no log line on the terminal
    assert re.search(r"│ broken\.mp4 +│ failed +│ ░+ +0% │ not_a_video", screen)
    assert "results" in screen
    (log_path,) = set(re.findall(r"worker logs: (\S+)", screen))
    assert Path(log_path).parent == tmp_path
    events = [json.loads(line)["event"] for line in Path(log_path).read_text().splitlines()]
    assert {"demo.emulator", "job.settled", "worker.stopped"} <= set(events)


def test_verbose_keeps_the_logs_on_the_terminal(broken: Path, tmp_path: Path) -> None:
    screen = on_a_terminal(tmp_path, "--verbose", str(broken))
    assert '"event": "job.settled"' in screen
    assert "worker logs:" not in screen
    assert "results" in screen
