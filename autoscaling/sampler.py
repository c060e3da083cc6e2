"""The sampler: read the queue and the ECS service, decide, publish, and (direct mode) scale.

One sample:

1. ``GetQueueAttributes`` -> visible, in-flight and delayed messages (read directly: the
   ``AWS/SQS`` CloudWatch metrics lag by minutes, and by up to 15 after an idle spell).
2. ``DescribeServices`` -> running and desired tasks. Busy tasks = in-flight messages (each is
   held by one task), capped at the running count.
3. The empty-queue clock (``autoscaling.state``) -> seconds the queue has been empty.
4. ``autoscaling.policy.decide`` -> the desired count.
5. ``PutMetricData`` in namespace ``Transcoder`` (dimension ``QueueName``): ``OutstandingMessages``,
   ``BacklogPerTask``, ``WakeSignal`` (1 when a message is visible and no task runs),
   ``DesiredTasks`` and ``RunningTasks`` -- for alarm-driven scaling.
6. Direct mode only: ``UpdateService(desiredCount)`` when it differs. The policy never returns
   less than the busy floor, and ECS task scale-in protection (set by busy workers) guards the
   moment between this sample and ECS choosing which task to stop.

Two triggers share the Lambda ``handler``: a schedule every minute (a full sample) and an upload
notification for ``raw/`` (S3 via EventBridge): when the service is at zero the upload counts as a
visible message, so the fleet starts waking before the enqueue Lambda has even sent the job.

Uses boto3 (sync), like the enqueue Lambda, and imports nothing from ``transcoder`` but the job
contract's key prefix.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import boto3
from botocore.config import Config

from autoscaling.policy import Decision, Observation, PolicyConfig, decide
from autoscaling.state import EmptyClock, TableClock
from transcoder.domain.job import RAW_PREFIX

if TYPE_CHECKING:
    from mypy_boto3_cloudwatch import CloudWatchClient
    from mypy_boto3_cloudwatch.type_defs import DimensionTypeDef, MetricDatumTypeDef
    from mypy_boto3_ecs import ECSClient
    from mypy_boto3_sqs import SQSClient

log = logging.getLogger("autoscaling.sampler")
log.setLevel(logging.INFO)

NAMESPACE = "Transcoder"


class ConfigError(RuntimeError):
    """The sampler's environment is incomplete or invalid."""


@dataclass(frozen=True, slots=True)
class SamplerConfig:
    """Where to look and what to do; ``direct`` lets the sampler set the desired count."""

    queue: str
    cluster: str
    service: str
    table: str
    direct: bool = False
    namespace: str = NAMESPACE
    max_gap_s: float = 180.0
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    region: str | None = None
    endpoint_url: str | None = None

    @property
    def queue_name(self) -> str:
        return self.queue.rstrip("/").rsplit("/", 1)[-1]

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> SamplerConfig:
        required = ("TRANSCODER_QUEUE", "TRANSCODER_ECS_CLUSTER", "TRANSCODER_ECS_SERVICE")
        missing = [name for name in (*required, "TRANSCODER_TABLE") if not env.get(name)]
        if missing:
            raise ConfigError(f"autoscaling sampler misconfigured: set {', '.join(missing)}")
        mode = env.get("TRANSCODER_SCALE_MODE", "metrics")
        if mode not in ("metrics", "direct"):
            raise ConfigError("TRANSCODER_SCALE_MODE must be 'metrics' or 'direct'")
        return cls(
            queue=env["TRANSCODER_QUEUE"],
            cluster=env["TRANSCODER_ECS_CLUSTER"],
            service=env["TRANSCODER_ECS_SERVICE"],
            table=env["TRANSCODER_TABLE"],
            direct=mode == "direct",
            namespace=env.get("TRANSCODER_SCALE_NAMESPACE", NAMESPACE),
            policy=policy_from_env(env),
            region=env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION"),
            endpoint_url=env.get("AWS_ENDPOINT_URL"),
        )


POLICY_VARIABLES = {
    "jobs_per_task": ("TRANSCODER_SLOTS", int),
    "acceptable_latency_s": ("TRANSCODER_SCALE_LATENCY_S", float),
    "typical_job_s": ("TRANSCODER_SCALE_JOB_S", float),
    "min_tasks": ("TRANSCODER_SCALE_MIN_TASKS", int),
    "max_tasks": ("TRANSCODER_SCALE_MAX_TASKS", int),
    "quiet_period_s": ("TRANSCODER_SCALE_QUIET_S", float),
}


def policy_from_env(env: Mapping[str, str]) -> PolicyConfig:
    values: dict[str, Any] = {}
    for name, (variable, kind) in POLICY_VARIABLES.items():
        if env.get(variable):
            try:
                values[name] = kind(env[variable])
            except ValueError:
                raise ConfigError(f"{variable} must be a number (got {env[variable]!r})") from None
    try:
        return PolicyConfig(**values)
    except ValueError as exc:
        raise ConfigError(f"autoscaling policy: {exc}") from None


@dataclass(frozen=True, slots=True)
class Sample:
    """One sample: what was seen, what was decided, whether ECS was told."""

    at: float
    observation: Observation
    decision: Decision
    applied: bool

    @property
    def wake_signal(self) -> int:
        return int(self.observation.visible > 0 and self.observation.running == 0)

    @property
    def backlog_per_task(self) -> float:
        """Outstanding / running; outstanding itself at zero tasks, so the series has no gaps."""
        return self.observation.outstanding / max(1, self.observation.running)

    def as_dict(self) -> dict[str, Any]:
        return {
            "at": self.at,
            **asdict(self.observation),
            "outstanding": self.observation.outstanding,
            "backlog_per_task": self.backlog_per_task,
            "wake_signal": self.wake_signal,
            "decided": self.decision.desired,
            "floor": self.decision.floor,
            "reason": self.decision.reason.value,
            "applied": self.applied,
        }


class Sampler:
    """Thin shell around ``decide``: three reads, one decision, at most two writes."""

    def __init__(
        self,
        config: SamplerConfig,
        sqs: SQSClient,
        ecs: ECSClient,
        cloudwatch: CloudWatchClient,
        clock: EmptyClock,
    ) -> None:
        self.config = config
        self._sqs = sqs
        self._ecs = ecs
        self._cloudwatch = cloudwatch
        self._clock = clock
        self._queue_url: str | None = None

    def sample(self, now: float | None = None, *, pending_uploads: int = 0) -> Sample:
        """Read, decide, publish and (direct mode) apply. ``pending_uploads`` count as visible."""
        at = time.time() if now is None else now
        observation = self.observe(at, pending_uploads)
        decision = decide(observation, self.config.policy)
        assert decision.desired >= decision.floor, "the policy never goes below busy tasks"
        applied = self.config.direct and self.apply(decision, observation)
        sample = Sample(at=at, observation=observation, decision=decision, applied=applied)
        self.publish(sample)
        log.info(json.dumps({"event": "autoscale.sample", **sample.as_dict()}))
        return sample

    def wake(self, now: float | None = None, *, pending_uploads: int = 1) -> Sample | None:
        """An upload arrived: sample at once if the service is at zero, otherwise do nothing."""
        running, desired = self.read_service()
        if running > 0 or desired > 0:
            return None
        return self.sample(now, pending_uploads=pending_uploads)

    def observe(self, now: float, pending_uploads: int = 0) -> Observation:
        visible, in_flight, delayed = self.read_queue()
        visible = max(visible, pending_uploads)
        running, desired = self.read_service()
        empty = visible + in_flight + delayed == 0
        return Observation(
            visible=visible,
            in_flight=in_flight,
            delayed=delayed,
            running=running,
            desired=desired,
            busy=min(in_flight, running),
            empty_for_s=self._clock.observe(empty=empty, now=now),
        )

    def queue_url(self) -> str:
        if self._queue_url is None:
            queue = self.config.queue
            if queue.startswith(("http://", "https://")):
                self._queue_url = queue
            else:
                self._queue_url = self._sqs.get_queue_url(QueueName=queue)["QueueUrl"]
        return self._queue_url

    def read_queue(self) -> tuple[int, int, int]:
        attributes = self._sqs.get_queue_attributes(
            QueueUrl=self.queue_url(),
            AttributeNames=[
                "ApproximateNumberOfMessages",
                "ApproximateNumberOfMessagesNotVisible",
                "ApproximateNumberOfMessagesDelayed",
            ],
        ).get("Attributes", {})
        return (
            int(attributes.get("ApproximateNumberOfMessages", "0")),
            int(attributes.get("ApproximateNumberOfMessagesNotVisible", "0")),
            int(attributes.get("ApproximateNumberOfMessagesDelayed", "0")),
        )

    def read_service(self) -> tuple[int, int]:
        response = self._ecs.describe_services(
            cluster=self.config.cluster, services=[self.config.service]
        )
        services = response.get("services", [])
        if not services:
            failures = response.get("failures", [])
            raise RuntimeError(f"ECS service {self.config.service} not found: {failures}")
        service = services[0]
        return int(service.get("runningCount", 0)), int(service.get("desiredCount", 0))

    def apply(self, decision: Decision, observation: Observation) -> bool:
        if decision.desired == observation.desired:
            return False
        self._ecs.update_service(
            cluster=self.config.cluster,
            service=self.config.service,
            desiredCount=decision.desired,
        )
        return True

    def publish(self, sample: Sample) -> None:
        dimensions: list[DimensionTypeDef] = [
            {"Name": "QueueName", "Value": self.config.queue_name}
        ]
        at = datetime.fromtimestamp(sample.at, tz=UTC)
        values = {
            "OutstandingMessages": float(sample.observation.outstanding),
            "BacklogPerTask": sample.backlog_per_task,
            "WakeSignal": float(sample.wake_signal),
            "DesiredTasks": float(sample.decision.desired),
            "RunningTasks": float(sample.observation.running),
        }
        data: list[MetricDatumTypeDef] = [
            {
                "MetricName": name,
                "Dimensions": dimensions,
                "Timestamp": at,
                "Value": value,
                "Unit": "Count",
            }
            for name, value in values.items()
        ]
        self._cloudwatch.put_metric_data(Namespace=self.config.namespace, MetricData=data)


def build_sampler(config: SamplerConfig) -> Sampler:
    """boto3 clients with standard retries; the endpoint override serves moto and LocalStack."""
    session = boto3.session.Session(region_name=config.region)
    client_config = Config(
        retries={"mode": "standard", "max_attempts": 3}, connect_timeout=5, read_timeout=20
    )
    options: dict[str, Any] = {"endpoint_url": config.endpoint_url, "config": client_config}
    dynamodb = session.client("dynamodb", **options)
    clock = TableClock(dynamodb, config.table, config.queue_name, config.max_gap_s)
    return Sampler(
        config,
        session.client("sqs", **options),
        session.client("ecs", **options),
        session.client("cloudwatch", **options),
        clock,
    )


def uploads_in(event: Mapping[str, Any]) -> int:
    """Count ``raw/`` object-created notifications (S3 records or an EventBridge event)."""
    if event.get("source") == "aws.s3" and event.get("detail-type") == "Object Created":
        key = str(event.get("detail", {}).get("object", {}).get("key", ""))
        return int(key.startswith(RAW_PREFIX))
    return sum(
        1
        for record in event.get("Records", [])
        if str(record.get("eventName", "")).startswith("ObjectCreated")
        and str(record.get("s3", {}).get("object", {}).get("key", "")).startswith(RAW_PREFIX)
    )


_sampler: Sampler | None = None


def handler(event: Mapping[str, Any], context: Any) -> dict[str, Any]:
    """Lambda entry point: a scheduled event samples; an upload event wakes the fleet from zero."""
    global _sampler  # noqa: PLW0603 - one set of clients per Lambda container
    if _sampler is None:
        _sampler = build_sampler(SamplerConfig.from_env(os.environ))
    uploads = uploads_in(event)
    if uploads:
        woken = _sampler.wake(pending_uploads=uploads)
        return woken.as_dict() if woken else {"event": "autoscale.awake", "uploads": uploads}
    return _sampler.sample().as_dict()
