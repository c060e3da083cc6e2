"""Worker-side scaling signals on /metrics: queue depth by state and backlog per running task."""

from __future__ import annotations

import secrets
from typing import Any

import boto3
from prometheus_client import REGISTRY

from transcoder.aws.clients import Clients
from transcoder.aws.queue import JobQueue
from transcoder.config import Settings
from transcoder.ops.bootstrap import Resources
from transcoder.runtime import app


def unique(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(4)}"


def gauge(name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


def ecs_service(endpoint: str, desired: int) -> tuple[str, str]:
    ecs: Any = boto3.client("ecs", endpoint_url=endpoint, region_name="us-east-1")
    cluster, service = unique("cluster"), unique("workers")
    ecs.create_cluster(clusterName=cluster)
    ecs.register_task_definition(
        family=service,
        requiresCompatibilities=["FARGATE"],
        networkMode="awsvpc",
        cpu="2048",
        memory="4096",
        containerDefinitions=[{"name": "worker", "image": "transcoder:test", "essential": True}],
    )
    ecs.create_service(
        cluster=cluster,
        serviceName=service,
        taskDefinition=service,
        desiredCount=0,
        launchType="FARGATE",
    )
    # moto 5.2 sets runningCount from UpdateService only (it starts at 0 on CreateService)
    ecs.update_service(cluster=cluster, service=service, desiredCount=desired)
    return cluster, service


async def send(queue: JobQueue, count: int) -> None:
    for index in range(count):
        await queue.send(f'{{"n": {index}}}')


async def test_backlog_is_per_running_task_when_the_service_is_configured(
    clients: Clients, settings: Settings, resources: Resources
) -> None:
    cluster, service = ecs_service(str(settings.endpoint_url), desired=4)
    configured = settings.model_copy(update={"ecs_cluster": cluster, "ecs_service": service})
    queue = JobQueue(clients.sqs, resources.queue_url, resources.dlq_url)
    await send(queue, 6)
    await queue.receive(2, wait_s=0, visibility_s=60)
    async with app.ecs_running_tasks(configured) as running_tasks:
        assert running_tasks is not None
        assert await running_tasks() == 4
        await app.record_queue_depth(queue, running_tasks)
    assert gauge("transcoder_queue_messages", queue="jobs", state="visible") == 4
    assert gauge("transcoder_queue_messages", queue="jobs", state="in_flight") == 2
    assert gauge("transcoder_queue_messages", queue="dlq", state="visible") == 0
    assert gauge("transcoder_backlog_per_task") == 1.5  # (4 visible + 2 in flight) / 4 tasks


async def test_backlog_counts_one_task_without_ecs_settings(
    clients: Clients, settings: Settings, resources: Resources
) -> None:
    queue = JobQueue(clients.sqs, resources.queue_url, resources.dlq_url)
    await send(queue, 3)
    async with app.ecs_running_tasks(settings) as running_tasks:
        assert running_tasks is None
        await app.record_queue_depth(queue, running_tasks)
    assert gauge("transcoder_backlog_per_task") == 3


async def test_an_unreachable_service_leaves_the_gauges_and_the_loop_alone(
    clients: Clients, settings: Settings, resources: Resources
) -> None:
    configured = settings.model_copy(update={"ecs_cluster": "nope", "ecs_service": "nope"})
    queue = JobQueue(clients.sqs, resources.queue_url, resources.dlq_url)
    async with app.ecs_running_tasks(configured) as running_tasks:
        assert running_tasks is not None
        await app.record_queue_depth(queue, running_tasks)  # must not raise
