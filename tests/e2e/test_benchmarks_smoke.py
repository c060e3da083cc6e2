"""``python -m benchmarks run --quick``, shrunk, as a smoke test of the whole harness.

It asserts only that every run produced valid outputs (the worker's own publish gate) and that
the results files were written; the numbers and the targets are not checked.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
RUNNERS = {"W", "B0", "B1", "B3"}


@pytest.mark.slow
def test_quick_benchmark_produces_valid_outputs_and_results(
    samples: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "results"
    command = [sys.executable, "-m", "benchmarks", "run", "--quick", "--reps", "1"]
    command += ["--duration", "1", "--workloads", "1080p-moov-end,mpeg2-ps"]
    command += ["--sweep-duration", "1", "--presets", "veryfast", "--crfs", "23"]
    command += ["--control-jobs", "3", "--vmaf-subsample", "5", "--out", str(out)]
    done = subprocess.run(
        command, cwd=REPO, capture_output=True, text=True, timeout=900, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    [result] = out.glob("*.json")
    doc = json.loads(result.read_text())
    assert {(r["runner"], r["workload"]) for r in doc["runs"]} == {
        (runner, workload) for runner in RUNNERS for workload in ("1080p-moov-end", "mpeg2-ps")
    }
    for run in doc["runs"]:
        assert run["valid"], run
        assert run["outputs"] and all(o["valid"] for o in run["outputs"]), run
    assert doc["sweep"] and all(point["ok"] for point in doc["sweep"])
    assert doc["control_plane"]["completed"] == 3
    assert result.with_suffix(".md").read_text().startswith("# Benchmark")
    assert "| target |" in done.stdout
    assert list(out.glob("*.png"))
