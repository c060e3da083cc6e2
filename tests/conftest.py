"""Shared fixtures: one AWS emulator for the whole run, isolated AWS environment per test,
random resource names, SDK retries off, and the real sample footage.

The folder is the tier (``-m unit``, ``-m integration``, ``-m e2e`` select them): ``unit/`` runs no
emulator and no ffmpeg (pure logic, fakes); ``integration/`` talks to the emulator over HTTP but
runs no ffmpeg; ``e2e/`` runs the real ffmpeg binary. Each test gets its folder's marker here, and a
unit test asking for the emulator, or an integration test asking for the sample footage, stops the
run with the place it belongs.

The emulator is moto's server mode on a free loopback port (a child process, real HTTP). With
``TRANSCODER_TEST_BACKEND=localstack`` and a reachable Docker engine, the same fixture starts
LocalStack through testcontainers instead; without Docker that backend skips, never fails.
"""

from __future__ import annotations

import os
import secrets
import shutil
import warnings
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from transcoder import logs
from transcoder.aws.clients import Clients, open_clients
from transcoder.config import Settings
from transcoder.ops.bootstrap import Resources, bootstrap
from transcoder.ops.emulator import Emulator

TESTS = Path(__file__).resolve().parent
TIERS = ("unit", "integration", "e2e")
# What a tier may not use: the emulator (every AWS fixture depends on aws_endpoint) and the
# footage, which is only there to be transcoded. ffmpeg run by a helper is not visible here.
BEYOND_TIER = {"unit": {"aws_endpoint", "samples"}, "integration": {"samples"}, "e2e": set[str]()}

AWS_VARIABLES = (
    "AWS_PROFILE",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_ENDPOINT_URL",
    "AWS_CONFIG_FILE",
    "AWS_SHARED_CREDENTIALS_FILE",
    "ECS_AGENT_URI",
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark each test with its folder's tier; refuse one whose fixtures belong to a higher tier."""
    misplaced: list[str] = []
    untiered: set[str] = set()
    for item in items:
        tier = tier_of(item.path)
        if tier is None:
            untiered.add(str(item.path.relative_to(config.rootpath)))
            continue
        item.add_marker(tier)
        beyond = sorted(BEYOND_TIER[tier] & set(getattr(item, "fixturenames", ())))
        if beyond:
            misplaced.append(f"{item.nodeid} uses {', '.join(beyond)}: not a {tier} test")
    if misplaced:
        raise pytest.UsageError("tests in the wrong tier folder:\n  " + "\n  ".join(misplaced))
    for path in sorted(untiered):
        warnings.warn(
            pytest.PytestWarning(f"{path} is in no tier folder (tests/unit, integration, e2e)"),
            stacklevel=1,
        )


def tier_of(path: Path) -> str | None:
    """The tier folder a test file sits in, if any."""
    try:
        folder = path.resolve().relative_to(TESTS).parts[0]
    except ValueError:
        return None
    return folder if folder in TIERS else None


def docker_available() -> bool:
    try:
        import docker

        docker.from_env(timeout=3).ping()
    except Exception:
        return False
    return True


class LocalStackBackend:
    """testcontainers' LocalStack, started only where a Docker engine answers."""

    def __init__(self) -> None:
        from testcontainers.localstack import LocalStackContainer

        self._container = LocalStackContainer(image="localstack/localstack:3.8.1").with_services(
            "s3", "sqs", "dynamodb", "cloudwatch", "ecs"
        )

    def start(self) -> str:
        self._container.start()
        return str(self._container.get_url())

    def stop(self) -> None:
        self._container.stop()


@pytest.fixture(scope="session")
def aws_endpoint() -> Iterator[str]:
    """The endpoint every test talks to; started once per session, stopped at the end."""
    backend = os.environ.get("TRANSCODER_TEST_BACKEND", "moto")
    if backend == "localstack":
        if not docker_available():
            pytest.skip(
                "TRANSCODER_TEST_BACKEND=localstack needs a Docker engine; none is reachable"
            )
        localstack = LocalStackBackend()
        url = localstack.start()
        yield url
        localstack.stop()
        return
    emulator = Emulator()
    emulator.start()
    yield emulator.url
    emulator.stop()


@pytest.fixture(autouse=True)
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test ever sees the developer's real AWS configuration."""
    for name in AWS_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    for name in list(os.environ):
        if name.startswith("TRANSCODER_") and name != "TRANSCODER_TEST_BACKEND":
            monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    logs.configure("debug", json=True)


def unique(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(4)}"


@pytest.fixture
def settings(aws_endpoint: str, tmp_path: Path) -> Settings:
    """Fast, isolated settings: random resource names, short waits, scratch under tmp_path."""
    return Settings(
        bucket=unique("media"),
        queue=unique("jobs"),
        dead_letter_queue=unique("jobs-dlq"),
        table=unique("jobs"),
        endpoint_url=aws_endpoint,
        region="us-east-1",
        wait_time_s=1,
        visibility_timeout_s=60,
        heartbeat_interval_s=1.0,
        retry_base_s=1.0,
        retry_max_s=2.0,
        shutdown_grace_s=10.0,
        metrics_host="127.0.0.1",
        metrics_port=0,
        queue_poll_interval_s=1.0,
        scratch_dir=tmp_path / "scratch",
        log_level="debug",
        worker_id=unique("worker"),
    )


@pytest.fixture
async def clients(settings: Settings) -> AsyncIterator[Clients]:
    """The production clients with SDK retries off, closed after the test."""
    async with open_clients(settings, max_attempts=1) as opened:
        yield opened


@pytest.fixture
async def resources(clients: Clients, settings: Settings) -> Resources:
    return await bootstrap(clients, settings)


@pytest.fixture(scope="session")
def samples() -> dict[str, Path]:
    """The real sample footage, fetched once and cached (see samples/README.md)."""
    if shutil.which("ffmpeg") is None or shutil.which("ffprobe") is None:
        pytest.fail("ffmpeg/ffprobe are required for the end-to-end tests (apt-get install ffmpeg)")
    from samples import ensure_samples

    return ensure_samples()
