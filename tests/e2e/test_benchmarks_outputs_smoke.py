"""``python -m benchmarks outputs --quick`` (2 s of 1080p, one repetition) as a smoke test.

It asserts that the four variants ran, passed the worker's own publish gates and wrote each
output kind, and that the results files were written; the CPU figures are not checked.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_quick_outputs_benchmark_gates_every_variant_and_reports_bytes(
    samples: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "results"
    command = [sys.executable, "-m", "benchmarks", "outputs", "--quick", "--out", str(out)]
    done = subprocess.run(
        command, cwd=REPO, capture_output=True, text=True, timeout=600, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    [result] = out.glob("*-outputs.json")
    doc = json.loads(result.read_text())
    assert [r["variant"] for r in doc["runs"]] == ["mp4", "hls", "stills", "both"]
    assert all(r["valid"] for r in doc["runs"]), doc["runs"]
    both = doc["summary"]["variants"]["both"]
    assert all(both["bytes"][kind] > 0 for kind in ("mp4", "hls", "poster", "sprite", "vtt"))
    assert doc["summary"]["variants"]["mp4"]["bytes"]["hls"] == 0
    assert result.with_suffix(".md").read_text().startswith("# Player-ready outputs")
    assert "| both |" in done.stdout
