"""The Lambda bundle: ``deploy/lambda/build.py`` builds the zip the template deploys.

Built here offline (``--from-env``), it must hold the three handlers, ``transcoder/domain/job.py``
and pydantic, and no aiobotocore; unpacked next to nothing but what the Lambda runtime provides
(boto3 and its dependencies), every handler imports. The compose relay is in
tests/integration/test_relay.py.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import boto3
import pytest

ROOT = Path(__file__).resolve().parents[2]
BUILD = ROOT / "deploy" / "lambda" / "build.py"
HANDLERS = ("enqueue_lambda.handler", "enqueue_lambda.dlq", "autoscaling.sampler")
# What the Lambda Python runtime itself provides (boto3 and its dependencies).
RUNTIME = ("boto3", "botocore", "s3transfer", "jmespath", "dateutil", "urllib3", "six.py")
FORBIDDEN = (
    "aiobotocore",
    "aiohttp",
    "boto3",
    "botocore",
    "structlog",
    "prometheus_client",
    "pydantic_settings",
    "ffmpeg",
)


def build(out: Path) -> str:
    completed = subprocess.run(
        [sys.executable, str(BUILD), "--from-env", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    return completed.stdout


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("lambda") / "functions.zip"
    build(out)
    return out


def test_bundle_holds_the_handlers_and_pydantic_but_no_aiobotocore(bundle: Path) -> None:
    names = zipfile.ZipFile(bundle).namelist()
    tops = {name.split("/")[0].split("-")[0] for name in names}
    assert [top for top in FORBIDDEN if top in tops] == []
    for required in (
        "transcoder/__init__.py",
        "transcoder/domain/job.py",
        "enqueue_lambda/handler.py",
        "enqueue_lambda/dlq.py",
        "autoscaling/sampler.py",
        "pydantic/__init__.py",
    ):
        assert required in names, required
    assert any(name.startswith("pydantic_core/") and ".so" in name for name in names)
    # The worker stays out: only the handlers' own import closure is bundled.
    for worker_module in (
        "transcoder/aws/clients.py",
        "transcoder/runtime/worker.py",
        "transcoder/config.py",
    ):
        assert worker_module not in names, worker_module
    assert not [name for name in names if name.endswith(".pyc")]


def test_every_handler_imports_with_only_the_runtime_beside_the_bundle(
    bundle: Path, tmp_path: Path
) -> None:
    code = tmp_path / "task"  # what Lambda unpacks to /var/task
    zipfile.ZipFile(bundle).extractall(code)
    runtime = tmp_path / "runtime"
    runtime.mkdir()
    site = Path(boto3.__file__).resolve().parents[1]
    for name in RUNTIME:
        (runtime / name).symlink_to(site / name)
    probe = (
        "import importlib, json, sys\n"
        f"sys.path[:0] = [{str(code)!r}, {str(runtime)!r}]\n"
        f"for name in {HANDLERS!r}:\n"
        "    assert callable(importlib.import_module(name).handler)\n"
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "AWS_LAMBDA"))}
    completed = subprocess.run(
        [sys.executable, "-S", "-c", probe],  # -S: no site-packages, only the stdlib
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=env,
        cwd=tmp_path,
    )
    assert completed.returncode == 0, completed.stderr
    loaded = set(json.loads(completed.stdout))
    assert {"pydantic", "transcoder", "enqueue_lambda", "autoscaling"} <= loaded
    assert loaded.isdisjoint({"aiobotocore", "aiohttp", "pydantic_settings", "structlog"})


def test_bundle_is_reproducible(bundle: Path, tmp_path: Path) -> None:
    again = tmp_path / "again.zip"
    build(again)
    assert (
        hashlib.sha256(again.read_bytes()).digest() == hashlib.sha256(bundle.read_bytes()).digest()
    )
