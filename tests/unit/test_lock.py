"""The lock files cover pyproject.toml: a dependency added without `make lock` fails here."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
REQUIREMENTS = ROOT / "requirements"


def name(requirement: str) -> str:
    """PEP 503 normalised project name of a requirement string."""
    match = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", requirement)
    assert match, requirement
    return re.sub(r"[-_.]+", "-", match.group(0)).lower()


def pins(path: Path) -> dict[str, str]:
    found = re.findall(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)", path.read_text(), re.M)
    return {name(project): version for project, version in found}


def test_every_declared_dependency_is_locked_with_hashes() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    runtime, dev = pins(REQUIREMENTS / "runtime.txt"), pins(REQUIREMENTS / "dev.txt")
    assert {name(r) for r in project["dependencies"]} <= set(runtime)
    assert {name(r) for r in project["optional-dependencies"]["dev"]} <= set(dev)
    for lock in ("runtime.txt", "dev.txt", "build.txt"):
        text = (REQUIREMENTS / lock).read_text()
        assert text.count("==") <= text.count("--hash=sha256:"), f"{lock} has a pin without a hash"


def test_the_image_runs_the_versions_the_tests_ran() -> None:
    runtime, dev = pins(REQUIREMENTS / "runtime.txt"), pins(REQUIREMENTS / "dev.txt")
    assert {p: v for p, v in runtime.items() if dev.get(p) != v} == {}
    emulator = pins(ROOT / "container" / "emulator" / "requirements.txt")
    assert emulator["moto"] == dev["moto"]
