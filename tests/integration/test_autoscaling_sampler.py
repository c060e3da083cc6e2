"""The sampler against the moto server: real SQS, ECS, CloudWatch and DynamoDB over HTTP."""

from __future__ import annotations

import dataclasses
import json
import secrets
import time
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import boto3
import pytest
from support.events import upload_event

from autoscaling import sampler as sampler_module
from autoscaling.policy import PolicyConfig, Reason
from autoscaling.sampler import Sampler, SamplerConfig, build_sampler
from autoscaling.state import STATE_PK
from transcoder.ops.cli import main

if TYPE_CHECKING:
    from mypy_boto3_cloudwatch import CloudWatchClient
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_ecs import ECSClient
    from mypy_boto3_sqs import SQSClient


POLICY = PolicyConfig(acceptable_latency_s=300, typical_job_s=400, max_tasks=10, quiet_period_s=300)
METRICS = {"OutstandingMessages", "BacklogPerTask", "WakeSignal", "DesiredTasks", "RunningTasks"}


@dataclasses.dataclass
class Fleet:
    """A queue, a table, a cluster and a Fargate service at zero tasks."""

    endpoint: str
    sqs: SQSClient
    ecs: ECSClient
    cloudwatch: CloudWatchClient
    dynamodb: DynamoDBClient
    queue_url: str
    config: SamplerConfig

    def sampler(self, **changes: Any) -> Sampler:
        return build_sampler(dataclasses.replace(self.config, **changes))

    def service(self) -> dict[str, Any]:
        response = self.ecs.describe_services(
            cluster=self.config.cluster, services=[self.config.service]
        )
        return dict(response["services"][0])

    def set_desired(self, count: int) -> None:
        self.ecs.update_service(
            cluster=self.config.cluster, service=self.config.service, desiredCount=count
        )

    def send(self, count: int) -> None:
        for index in range(count):
            self.sqs.send_message(QueueUrl=self.queue_url, MessageBody=f'{{"n": {index}}}')

    def take(self, count: int) -> None:
        """Receive messages as busy workers would (they stay in flight)."""
        taken = 0
        while taken < count:
            response = self.sqs.receive_message(
                QueueUrl=self.queue_url, MaxNumberOfMessages=count - taken, VisibilityTimeout=600
            )
            taken += len(response.get("Messages", []))

    def metric(self, name: str, since: float) -> list[float]:
        start = datetime.fromtimestamp(since - 120, tz=UTC)
        response = self.cloudwatch.get_metric_data(
            MetricDataQueries=[
                {
                    "Id": "m",
                    "MetricStat": {
                        "Metric": {
                            "Namespace": self.config.namespace,
                            "MetricName": name,
                            "Dimensions": [{"Name": "QueueName", "Value": self.config.queue_name}],
                        },
                        "Period": 60,
                        "Stat": "Maximum",
                    },
                }
            ],
            StartTime=start,
            EndTime=start + timedelta(hours=1),
        )
        return list(response["MetricDataResults"][0]["Values"])


def unique(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(4)}"


def client(name: str, endpoint: str) -> Any:
    return boto3.client(name, endpoint_url=endpoint, region_name="us-east-1")  # type: ignore[call-overload]


def create_service(ecs: ECSClient, cluster: str, service: str) -> None:
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
        launchType="FARGATE",  # moto 5.2 answers 500 when an awsvpc subnet is added here
    )


def create_table(dynamodb: DynamoDBClient, table: str) -> None:
    dynamodb.create_table(
        TableName=table,
        AttributeDefinitions=[
            {"AttributeName": "pk", "AttributeType": "S"},
            {"AttributeName": "sk", "AttributeType": "S"},
        ],
        KeySchema=[
            {"AttributeName": "pk", "KeyType": "HASH"},
            {"AttributeName": "sk", "KeyType": "RANGE"},
        ],
        BillingMode="PAY_PER_REQUEST",
    )


@pytest.fixture
def fleet(aws_endpoint: str) -> Fleet:
    sqs, ecs = client("sqs", aws_endpoint), client("ecs", aws_endpoint)
    dynamodb = client("dynamodb", aws_endpoint)
    queue, table = unique("jobs"), unique("jobs")
    cluster, service = unique("cluster"), unique("workers")
    queue_url = sqs.create_queue(QueueName=queue)["QueueUrl"]
    create_table(dynamodb, table)
    create_service(ecs, cluster, service)
    config = SamplerConfig(
        queue=queue,
        cluster=cluster,
        service=service,
        table=table,
        direct=True,
        namespace=unique("Transcoder"),
        policy=POLICY,
        region="us-east-1",
        endpoint_url=aws_endpoint,
    )
    return Fleet(
        aws_endpoint, sqs, ecs, client("cloudwatch", aws_endpoint), dynamodb, queue_url, config
    )


def test_one_message_wakes_the_service_from_zero_and_publishes_the_signals(fleet: Fleet) -> None:
    fleet.send(1)
    now = time.time()
    sample = fleet.sampler().sample(now)
    assert sample.decision.reason is Reason.WAKE
    assert sample.applied
    assert fleet.service()["desiredCount"] == 1
    listed = fleet.cloudwatch.list_metrics(Namespace=fleet.config.namespace)["Metrics"]
    assert {m["MetricName"] for m in listed} == METRICS
    assert all(
        m["Dimensions"] == [{"Name": "QueueName", "Value": fleet.config.queue_name}] for m in listed
    )
    assert fleet.metric("WakeSignal", now) == [1.0]
    assert fleet.metric("OutstandingMessages", now) == [1.0]
    assert fleet.metric("BacklogPerTask", now) == [1.0]
    assert fleet.metric("DesiredTasks", now) == [1.0]
    assert fleet.metric("RunningTasks", now) == [0.0]


def test_metrics_mode_publishes_but_never_touches_the_service(fleet: Fleet) -> None:
    fleet.send(3)
    now = time.time()
    sample = fleet.sampler(direct=False).sample(now)
    assert sample.decision.desired == 3
    assert not sample.applied
    assert fleet.service()["desiredCount"] == 0
    assert fleet.metric("DesiredTasks", now) == [3.0]
    assert fleet.metric("WakeSignal", now) == [1.0]


def test_scale_out_counts_in_flight_work_and_backlog_is_per_running_task(fleet: Fleet) -> None:
    fleet.set_desired(2)
    fleet.send(5)
    fleet.take(2)
    now = time.time()
    sample = fleet.sampler().sample(now)
    assert (sample.observation.visible, sample.observation.in_flight) == (3, 2)
    assert sample.decision.desired == 5
    assert fleet.service()["desiredCount"] == 5
    assert fleet.metric("BacklogPerTask", now) == [2.5]
    assert fleet.metric("WakeSignal", now) == [0.0]


def test_scale_in_never_goes_below_busy_tasks(fleet: Fleet) -> None:
    fleet.set_desired(6)
    fleet.send(3)
    fleet.take(3)
    sample = fleet.sampler().sample(time.time())
    assert sample.observation.busy == 3
    assert sample.decision.floor == 3
    assert fleet.service()["desiredCount"] == 3


def test_zero_only_after_the_quiet_period_measured_across_invocations(fleet: Fleet) -> None:
    fleet.set_desired(4)
    start = time.time()
    # Each sample builds a new sampler, as a fresh Lambda container would.
    first = fleet.sampler().sample(start)
    assert (first.decision.desired, first.decision.reason) == (1, Reason.QUIET)
    assert fleet.sampler().sample(start + 120).decision.desired == 1
    assert fleet.sampler().sample(start + 240).observation.empty_for_s == pytest.approx(240)
    last = fleet.sampler().sample(start + 300)
    assert (last.decision.desired, last.decision.reason) == (0, Reason.TO_ZERO)
    assert fleet.service()["desiredCount"] == 0
    item = fleet.dynamodb.get_item(
        TableName=fleet.config.table,
        Key={"pk": {"S": STATE_PK}, "sk": {"S": f"QUEUE#{fleet.config.queue_name}"}},
    )["Item"]
    assert float(item["empty_since"]["N"]) == pytest.approx(start)


def test_work_resets_the_quiet_period(fleet: Fleet) -> None:
    fleet.set_desired(1)
    start = time.time()
    fleet.sampler().sample(start)
    fleet.send(1)
    assert fleet.sampler().sample(start + 200).observation.empty_for_s == 0
    fleet.take(1)
    fleet.sqs.purge_queue(QueueUrl=fleet.queue_url)
    assert fleet.sampler().sample(start + 400).decision.desired == 1  # empty again from 400


def test_a_gap_in_sampling_restarts_the_quiet_period(fleet: Fleet) -> None:
    fleet.set_desired(2)
    start = time.time()
    fleet.sampler().sample(start)
    later = fleet.sampler().sample(start + 1_000)  # nobody watched the queue for 1000 s
    assert later.observation.empty_for_s == 0
    assert later.decision.desired == 1


@pytest.fixture
def lambda_env(fleet: Fleet, monkeypatch: pytest.MonkeyPatch) -> Fleet:
    env = {
        "TRANSCODER_QUEUE": fleet.queue_url,
        "TRANSCODER_TABLE": fleet.config.table,
        "TRANSCODER_ECS_CLUSTER": fleet.config.cluster,
        "TRANSCODER_ECS_SERVICE": fleet.config.service,
        "TRANSCODER_SCALE_MODE": "direct",
        "TRANSCODER_SCALE_NAMESPACE": fleet.config.namespace,
        "TRANSCODER_SCALE_MAX_TASKS": "4",
        "AWS_ENDPOINT_URL": fleet.endpoint,
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(sampler_module, "_sampler", None)
    return fleet


def test_handler_wakes_on_an_upload_before_the_message_is_sent(lambda_env: Fleet) -> None:
    result = sampler_module.handler(upload_event("raw/u1/v1.mp4"), None)
    assert result["reason"] == "wake"
    assert result["visible"] == 1  # the upload counted as a visible message
    assert lambda_env.service()["desiredCount"] == 1
    again = sampler_module.handler(upload_event("raw/u1/v2.mp4"), None)
    assert again == {"event": "autoscale.awake", "uploads": 1}


def test_handler_samples_on_schedule_with_policy_from_the_environment(lambda_env: Fleet) -> None:
    lambda_env.send(9)
    scheduled = {"source": "aws.events", "detail-type": "Scheduled Event"}
    result = sampler_module.handler(scheduled, None)
    assert result["decided"] == 4  # TRANSCODER_SCALE_MAX_TASKS
    assert json.loads(json.dumps(result)) == result
    assert lambda_env.service()["desiredCount"] == 4


@pytest.fixture
def cli_env(fleet: Fleet, monkeypatch: pytest.MonkeyPatch) -> Fleet:
    env = {
        "TRANSCODER_QUEUE": fleet.config.queue,
        "TRANSCODER_TABLE": fleet.config.table,
        "TRANSCODER_ECS_CLUSTER": fleet.config.cluster,
        "TRANSCODER_ECS_SERVICE": fleet.config.service,
        "AWS_ENDPOINT_URL": fleet.endpoint,
        "TRANSCODER_LOG_JSON": "true",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return fleet


def test_cli_sample_once(cli_env: Fleet, capsys: pytest.CaptureFixture[str]) -> None:
    cli_env.send(2)
    namespace = cli_env.config.namespace
    assert main(["autoscale", "sample", "--direct", "--json", "--namespace", namespace]) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (printed["visible"], printed["decided"], printed["applied"]) == (2, 2, True)
    assert cli_env.service()["desiredCount"] == 2


def test_cli_run_loops_and_reaches_zero_after_the_quiet_period(
    cli_env: Fleet, capsys: pytest.CaptureFixture[str]
) -> None:
    cli_env.set_desired(3)
    args = ["autoscale", "run", "--direct", "--json", "--quiet", "0.2", "--interval", "0.3"]
    assert main([*args, "--iterations", "3", "--namespace", cli_env.config.namespace]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert [line["decided"] for line in lines] == [1, 0, 0]
    assert cli_env.service()["desiredCount"] == 0


def test_cli_without_a_service_says_what_to_set(
    aws_endpoint: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", aws_endpoint)
    assert main(["autoscale", "sample"]) == 2
    assert "TRANSCODER_ECS_CLUSTER" in capsys.readouterr().err
