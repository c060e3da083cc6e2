"""Build the zip for the three Lambdas: enqueue, dead-letter handler and autoscaling sampler.

    python deploy/lambda/build.py                    # -> dist/lambda/functions.zip (x86_64)
    python deploy/lambda/build.py --arch arm64
    python deploy/lambda/build.py --from-env         # offline: copy pydantic from this venv

What goes in:

* First-party code: the handler modules and exactly the modules they import, transitively
  (found by reading their ``import`` statements), so ``transcoder/domain/job.py`` comes along but
  the
  worker (aiobotocore, ffmpeg, structlog, prometheus) does not.
* pydantic and its dependencies, as manylinux wheels for the Lambda runtime's Python and
  architecture (``pip install --platform ... --only-binary=:all:``), at the version installed in
  this environment, so the Lambdas run the pydantic the tests ran. ``--from-env`` copies the
  installed files instead: no network, but only valid when this machine matches the runtime
  (Linux, same Python minor version and CPU); the tests use it.
* Not boto3: the Lambda Python runtime provides it.

The build fails if a forbidden distribution (aiobotocore, aiohttp, ...) ended up in the bundle.
The zip is reproducible (sorted entries, fixed timestamps), so an unchanged bundle has the same
hash and ``sam deploy`` does not update the functions.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import importlib.metadata
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterable, Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HANDLERS = ("enqueue_lambda.handler", "enqueue_lambda.dlq", "autoscaling.sampler")
FIRST_PARTY = frozenset({"transcoder", "enqueue_lambda", "autoscaling"})
DEPENDENCIES = ("pydantic",)
FORBIDDEN = frozenset(
    {
        "aiobotocore",
        "aiohttp",
        "aioitertools",
        "boto3",
        "botocore",
        "ffmpeg",
        "prometheus_client",
        "pydantic_settings",
        "structlog",
    }
)
RUNTIME_PYTHON = "3.11"
PLATFORMS = {"x86_64": "manylinux2014_x86_64", "arm64": "manylinux2014_aarch64"}
ZIP_DATE = (1980, 1, 1, 0, 0, 0)


class BuildError(RuntimeError):
    """The bundle cannot be built as specified."""


def module_file(module: str, root: Path = ROOT) -> Path:
    base = root.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    raise BuildError(f"no module {module} under {root}")


def imported_modules(path: Path, module: str) -> Iterator[str]:
    """Absolute names of the modules ``path`` imports (any depth, relative imports resolved)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1])
                name = f"{base}.{node.module}" if node.module else base
            else:
                name = node.module or ""
            yield name
            # ``from pkg import mod`` may name a submodule rather than an attribute.
            yield from (f"{name}.{alias.name}" for alias in node.names)


def closure(roots: Iterable[str], root: Path = ROOT) -> dict[str, Path]:
    """Every first-party module reachable from ``roots``, with each package's ``__init__``."""
    found: dict[str, Path] = {}
    roots = tuple(roots)
    pending = list(roots)
    while pending:
        module = pending.pop()
        if module in found or module.split(".")[0] not in FIRST_PARTY:
            continue
        try:
            path = module_file(module, root)
        except BuildError:
            if module in roots:
                raise
            continue  # ``from package import attribute``: not a module
        found[module] = path
        parent = module.rpartition(".")[0]
        pending.extend([parent] if parent else [])
        pending.extend(imported_modules(path, module))
    return found


def requirement_names(distribution: str) -> list[str]:
    """Runtime requirements (no extras) of an installed distribution."""
    names = []
    for requirement in importlib.metadata.requires(distribution) or []:
        if re.search(r"\bextra\s*==", requirement):
            continue
        match = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", requirement)
        if match:
            names.append(match.group(0))
    return names


def installed_closure(distributions: Iterable[str]) -> list[str]:
    seen: list[str] = []
    pending = list(distributions)
    while pending:
        name = pending.pop()
        canonical = re.sub(r"[-_.]+", "-", name).lower()
        if canonical in seen:
            continue
        seen.append(canonical)
        pending.extend(requirement_names(canonical))
    return sorted(seen)


def copy_installed(distributions: Iterable[str], target: Path) -> None:
    """Copy installed files (code and dist-info, no bytecode) of the distributions' closure."""
    for name in installed_closure(distributions):
        dist = importlib.metadata.distribution(name)
        for file in dist.files or []:
            if "__pycache__" in file.parts or file.suffix == ".pyc" or ".." in file.parts:
                continue
            source = Path(str(file.locate()))
            if source.is_file():
                destination = target / Path(str(file))
                destination.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, destination)


def pip_install(distributions: Iterable[str], target: Path, arch: str) -> None:
    """Wheels for the Lambda runtime, pinned to the versions installed here."""
    pins = [f"{name}=={importlib.metadata.version(name)}" for name in distributions]
    command = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--quiet",
        "--no-compile",
        "--target",
        str(target),
        "--platform",
        PLATFORMS[arch],
        "--implementation",
        "cp",
        "--python-version",
        RUNTIME_PYTHON,
        "--only-binary=:all:",
        *pins,
    ]
    completed = subprocess.run(command, check=False, capture_output=True, text=True)
    if completed.returncode != 0:
        raise BuildError(f"pip failed ({' '.join(command)}):\n{completed.stderr[-2000:]}")


def check_forbidden(staging: Path) -> None:
    present = sorted(
        path.name
        for path in staging.iterdir()
        if path.name.split(".")[0] in FORBIDDEN or path.name.split("-")[0] in FORBIDDEN
    )
    if present:
        raise BuildError(f"forbidden in the Lambda bundle: {', '.join(present)}")


def write_zip(staging: Path, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    files = sorted(p for p in staging.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as bundle:
        for path in files:
            info = zipfile.ZipInfo(path.relative_to(staging).as_posix(), date_time=ZIP_DATE)
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            bundle.writestr(info, path.read_bytes())


def build(out: Path, *, arch: str = "x86_64", from_env: bool = False) -> dict[str, str]:
    """Build the bundle at ``out``; returns what went in, for the log line."""
    with tempfile.TemporaryDirectory(prefix="lambda-bundle-") as tmp:
        staging = Path(tmp)
        modules = closure(HANDLERS)
        for path in modules.values():
            destination = staging / path.relative_to(ROOT)
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, destination)
        if from_env:
            copy_installed(DEPENDENCIES, staging)
        else:
            pip_install(installed_closure(DEPENDENCIES), staging, arch)
        check_forbidden(staging)
        write_zip(staging, out)
    digest = hashlib.sha256(out.read_bytes()).hexdigest()
    return {
        "zip": str(out),
        "bytes": str(out.stat().st_size),
        "sha256": digest,
        "modules": ",".join(sorted(modules)),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "dist" / "lambda" / "functions.zip")
    parser.add_argument("--arch", choices=sorted(PLATFORMS), default="x86_64")
    parser.add_argument(
        "--from-env", action="store_true", help="copy pydantic from this environment (offline)"
    )
    args = parser.parse_args(argv)
    try:
        result = build(args.out.resolve(), arch=args.arch, from_env=args.from_env)
    except BuildError as exc:
        print(f"build.py: {exc}", file=sys.stderr)
        return 1
    for name, value in result.items():
        print(f"{name}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
