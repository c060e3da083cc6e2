"""CI checks for what ships: the CloudFormation/SAM template, the Dockerfile and docker-compose.

No Docker engine and no AWS account are needed: the template is linted with cfn-lint and read
as data, the Dockerfile and the compose file are parsed, and every cross-reference (variables,
ports, queue settings, handlers, metric names) is checked against the code that consumes it.
"""

from __future__ import annotations

import importlib
import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import pytest
import yaml
from pydantic import AliasChoices

from transcoder.config import ENV_PREFIX, Settings
from transcoder.domain.job import STATUS_INDEX
from transcoder.ops.bootstrap import DLQ_RETENTION_S

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "deploy" / "template.yaml"
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"

# ---------------------------------------------------------------------------- template reading


class CfnLoader(yaml.SafeLoader):
    """PyYAML with CloudFormation's short tags: ``!Ref X`` -> ``{"Ref": "X"}``, etc."""


def _construct_tag(loader: CfnLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    key = suffix if suffix in ("Ref", "Condition") else f"Fn::{suffix}"
    value: Any
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
        if suffix == "GetAtt":
            value = str(value).split(".", 1)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(cast(yaml.MappingNode, node), deep=True)
    return {key: value}


CfnLoader.add_multi_constructor("!", _construct_tag)


def load_template(path: Path = TEMPLATE) -> dict[str, Any]:
    document = yaml.load(path.read_text(encoding="utf-8"), Loader=CfnLoader)  # noqa: S506
    assert isinstance(document, dict)
    return document


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return load_template()


def resources_of(template: Mapping[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {
        name: resource
        for name, resource in template["Resources"].items()
        if resource["Type"] == kind
    }


def props(template: Mapping[str, Any], name: str) -> dict[str, Any]:
    properties = template["Resources"][name]["Properties"]
    assert isinstance(properties, dict)
    return properties


def render(value: Any) -> str:
    """An intrinsic as a readable string: ``!GetAtt B.Arn`` -> ``${B.Arn}``, ``!Sub`` as written."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and len(value) == 1:
        ((key, inner),) = value.items()
        if key == "Ref":
            return f"${{{inner}}}"
        if key == "Fn::GetAtt":
            return f"${{{'.'.join(inner)}}}"
        if key == "Fn::Sub":
            return str(inner if isinstance(inner, str) else inner[0])
    return json.dumps(value, sort_keys=True)


def branches(value: Any) -> Iterator[Any]:
    """Both sides of an ``Fn::If`` (minus ``AWS::NoValue``), so conditional grants are checked."""
    if isinstance(value, dict) and set(value) == {"Fn::If"}:
        for side in value["Fn::If"][1:]:
            yield from branches(side)
    elif value != {"Ref": "AWS::NoValue"}:
        yield value


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def env_of_container(template: Mapping[str, Any]) -> dict[str, Any]:
    (container,) = props(template, "WorkerTaskDefinition")["ContainerDefinitions"]
    return {item["Name"]: item["Value"] for item in container["Environment"]}


def settings_variables() -> set[str]:
    names: set[str] = set()
    for name, field in Settings.model_fields.items():
        alias = field.validation_alias
        if isinstance(alias, AliasChoices):
            names.update(str(choice) for choice in alias.choices)
        elif isinstance(alias, str):
            names.add(alias)
        else:
            names.add(f"{ENV_PREFIX}{name.upper()}")
    return names


# ---------------------------------------------------------------------------- IAM: least privilege

# AWS offers these actions on no resource but "*". Each exemption is explicit and justified.
STAR_ONLY_ACTIONS = {
    "ecr:GetAuthorizationToken": None,  # account-level login to the registry
    "cloudwatch:PutMetricData": "cloudwatch:namespace",  # must be pinned by this condition key
}
ACTION = re.compile(r"^[a-z0-9-]+:[A-Za-z0-9]+$")


@dataclass(frozen=True)
class Grant:
    where: str
    actions: tuple[str, ...]
    resources: tuple[str, ...]
    condition: Mapping[str, Any]


def statement_problems(statement: Mapping[str, Any], where: str) -> list[str]:
    """Everything wrong with one policy statement under the least-privilege rules."""
    if statement.get("Effect") != "Allow":
        return []
    problems = [
        f"{where}: {key} grants everything else"
        for key in ("NotAction", "NotResource", "NotPrincipal")
        if key in statement
    ]
    actions = [render(a) for a in as_list(statement.get("Action", []))]
    problems += [
        f"{where}: wildcard or malformed action {action!r}"
        for action in actions
        if not ACTION.fullmatch(action)
    ]
    for resource in (render(r) for r in as_list(statement.get("Resource", []))):
        problems += resource_problems(resource, actions, statement.get("Condition", {}), where)
    return problems


def resource_problems(
    resource: str, actions: list[str], condition: Mapping[str, Any], where: str
) -> list[str]:
    if resource == "*":
        if not actions or not all(a in STAR_ONLY_ACTIONS for a in actions):
            return [f"{where}: Resource '*' for {actions}"]
        return [
            f"{where}: {action} on '*' must be pinned by {pin}"
            for action in actions
            if (pin := STAR_ONLY_ACTIONS[action]) and pin not in json.dumps(condition)
        ]
    if re.fullmatch(r"\$\{[^}]+\}/\*", resource):
        return [f"{where}: {resource!r} is every object/child, not a key prefix"]
    if resource.startswith("arn:"):
        fields = resource.split(":", 5)
        if any("*" in part for part in fields[1:5]) or fields[5:] in ([], ["*"]):
            return [f"{where}: wildcard ARN {resource!r}"]
    return []


def role_statements(template: Mapping[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every permission statement of every role and policy in the template."""
    for name, resource in template["Resources"].items():
        kind = resource["Type"]
        documents = []
        if kind == "AWS::IAM::Role":
            documents = [p["PolicyDocument"] for p in resource["Properties"].get("Policies", [])]
        elif kind in ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy"):
            documents = [resource["Properties"]["PolicyDocument"]]
        for document in documents:
            for raw in document["Statement"]:
                for statement in branches(raw):
                    yield f"{name}/{statement.get('Sid', '?')}", statement


def grants(template: Mapping[str, Any], role: str) -> list[Grant]:
    return [
        Grant(
            where,
            tuple(render(a) for a in as_list(s["Action"])),
            tuple(render(r) for r in as_list(s["Resource"])),
            s.get("Condition", {}),
        )
        for where, s in role_statements(template)
        if where.startswith(f"{role}/")
    ]


def allowed(template: Mapping[str, Any], role: str) -> dict[str, set[str]]:
    """resource -> actions granted by ``role``."""
    table: dict[str, set[str]] = {}
    for grant in grants(template, role):
        for resource in grant.resources:
            table.setdefault(resource, set()).update(grant.actions)
    return table


def test_no_wildcard_actions_or_resources_in_any_role(template: dict[str, Any]) -> None:
    statements = list(role_statements(template))
    assert len(statements) > 20, "the reader found too few statements to mean anything"
    problems = [p for where, s in statements for p in statement_problems(s, where)]
    assert problems == []


@pytest.mark.parametrize(
    ("statement", "complaint"),
    [
        ({"Effect": "Allow", "Action": "*", "Resource": "arn:aws:sqs:us-east-1:1:q"}, "action"),
        ({"Effect": "Allow", "Action": "s3:*", "Resource": "arn:aws:s3:::b/raw/*"}, "action"),
        ({"Effect": "Allow", "Action": "sqs:Get*", "Resource": "arn:aws:sqs:us-east-1:1:q"}, "a"),
        ({"Effect": "Allow", "Action": "sqs:SendMessage", "Resource": "*"}, "Resource '*'"),
        ({"Effect": "Allow", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::*"}, "ARN"),
        ({"Effect": "Allow", "Action": "sqs:SendMessage", "Resource": "arn:aws:sqs:*:*:q"}, "ARN"),
        (
            {"Effect": "Allow", "Action": "s3:GetObject", "Resource": {"Fn::Sub": "${B.Arn}/*"}},
            "every object",
        ),
        ({"Effect": "Allow", "NotAction": "iam:PassRole", "Resource": "arn:aws:s3:::b"}, "Not"),
        ({"Effect": "Allow", "Action": "cloudwatch:PutMetricData", "Resource": "*"}, "pinned"),
    ],
)
def test_the_wildcard_check_catches_what_it_claims_to(
    statement: dict[str, Any], complaint: str
) -> None:
    problems = statement_problems(statement, "probe")
    assert problems
    assert any(complaint in p for p in problems), problems


def test_object_key_patterns_and_pinned_star_only_actions_pass() -> None:
    ok: list[dict[str, Any]] = [
        {"Effect": "Allow", "Action": "s3:GetObject", "Resource": {"Fn::Sub": "${B.Arn}/raw/*"}},
        {
            "Effect": "Allow",
            "Action": "cloudwatch:PutMetricData",
            "Resource": "*",
            "Condition": {"StringEquals": {"cloudwatch:namespace": "Transcoder"}},
        },
        {"Effect": "Allow", "Action": "ecr:GetAuthorizationToken", "Resource": "*"},
        {"Effect": "Deny", "Action": "s3:*", "Resource": "*"},
    ]
    assert [p for s in ok for p in statement_problems(s, "probe")] == []


def test_each_component_has_its_own_role_and_no_managed_policies(
    template: dict[str, Any],
) -> None:
    functions = resources_of(template, "AWS::Serverless::Function")
    assert set(functions) == {"EnqueueFunction", "DeadLetterFunction", "SamplerFunction"}
    roles = []
    for name, function in functions.items():
        properties = function["Properties"]
        # SAM's "Policies" would generate a role with AWSLambdaBasicExecutionRole ("*" logs).
        assert "Policies" not in properties, name
        roles.append(properties["Role"]["Fn::GetAtt"][0])
    task = props(template, "WorkerTaskDefinition")
    roles += [task["TaskRoleArn"]["Fn::GetAtt"][0], task["ExecutionRoleArn"]["Fn::GetAtt"][0]]
    assert len(set(roles)) == len(roles) == 5
    for name, role in resources_of(template, "AWS::IAM::Role").items():
        assert "ManagedPolicyArns" not in role["Properties"], name
        (trust,) = role["Properties"]["AssumeRolePolicyDocument"]["Statement"]
        assert trust["Action"] == "sts:AssumeRole"
        expected = (
            "ecs-tasks.amazonaws.com" if name.startswith("Worker") else "lambda.amazonaws.com"
        )
        assert trust["Principal"] == {"Service": expected}, name


# PutEvents on the one bus job events go to: the stack's own (EventBusName empty) or the named one.
NAMED_BUS_ARN = (
    "arn:${AWS::Partition}:events:${AWS::Region}:${AWS::AccountId}:event-bus/${EventBusName}"
)
EVENT_BUS_GRANTS = {"${JobEventBus.Arn}": {"events:PutEvents"}, NAMED_BUS_ARN: {"events:PutEvents"}}


def test_worker_role_grants_exactly_what_the_worker_calls(template: dict[str, Any]) -> None:
    task_arns = "arn:${AWS::Partition}:ecs:${AWS::Region}:${AWS::AccountId}:task/${Cluster}/*"
    assert allowed(template, "WorkerTaskRole") == {
        "${MediaBucket.Arn}/raw/*": {"s3:GetObject", "s3:GetObjectVersion"},
        "${MediaBucket.Arn}/transcoded/*": {
            "s3:PutObject",
            "s3:AbortMultipartUpload",
            "s3:GetObject",
        },
        "${MediaBucket.Arn}/transcoded/hls/*": {"s3:DeleteObject"},
        "${MediaBucket.Arn}/work/*": {
            "s3:PutObject",
            "s3:AbortMultipartUpload",
            "s3:GetObject",
            "s3:DeleteObject",
        },
        "${MediaBucket.Arn}": {"s3:ListBucket"},
        "${JobsQueue.Arn}": {
            "sqs:ReceiveMessage",
            "sqs:DeleteMessage",
            "sqs:ChangeMessageVisibility",
            "sqs:GetQueueAttributes",
            "sqs:GetQueueUrl",
            "sqs:SendMessage",
        },
        "${JobsDeadLetterQueue.Arn}": {
            "sqs:SendMessage",
            "sqs:GetQueueAttributes",
            "sqs:GetQueueUrl",
        },
        "${JobsTable.Arn}": {"dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:Query"},
        f"${{JobsTable.Arn}}/index/{STATUS_INDEX}": {
            "dynamodb:GetItem",
            "dynamodb:PutItem",
            "dynamodb:Query",
        },
        task_arns: {"ecs:UpdateTaskProtection", "ecs:GetTaskProtection"},
        **EVENT_BUS_GRANTS,
    }


# The worker's adapters, the service each one calls, and the IAM action behind each SDK call
# that is not simply the operation's name in CamelCase.
ADAPTERS = {"storage.py": "s3", "status.py": "dynamodb", "queue.py": "sqs", "bus.py": "events"}
S3_ACTIONS = {
    "head_object": "s3:GetObject",
    "generate_presigned_url": "s3:GetObject",  # ffmpeg's GET is signed with the task role
    "create_multipart_upload": "s3:PutObject",
    "upload_part": "s3:PutObject",
    "complete_multipart_upload": "s3:PutObject",
    "delete_objects": "s3:DeleteObject",  # a batch of deletes needs DeleteObject on each key
    "get_paginator": "s3:ListBucket",  # storage pages list_objects_v2 (its only paginator)
}
S3_RESOURCES = ("/raw/*", "/transcoded/*", "/transcoded/hls/*", "/work/*", "")
OPERATOR_ONLY = {"sqs:StartMessageMoveTask"}  # `transcoder dlq redrive`: OperatorPolicy


def adapter_actions() -> set[str]:
    """IAM actions for every SDK call in the worker's adapters, read from their source."""
    actions = set()
    for module, service in ADAPTERS.items():
        source = (ROOT / "transcoder" / "aws" / module).read_text(encoding="utf-8")
        for operation in re.findall(r"\b(?:self\._client|client)\.([a-z_]+)\(", source):
            camel = "".join(part.title() for part in operation.split("_"))
            actions.add(S3_ACTIONS.get(operation, f"{service}:{camel}"))
    return actions


def test_worker_role_covers_every_call_the_worker_adapters_make(
    template: dict[str, Any],
) -> None:
    needed = adapter_actions() - OPERATOR_ONLY
    assert {"sqs:ReceiveMessage", "dynamodb:PutItem", "s3:PutObject", "events:PutEvents"} <= needed
    table = allowed(template, "WorkerTaskRole")
    on = {
        "sqs": table["${JobsQueue.Arn}"],
        "dynamodb": table["${JobsTable.Arn}"],
        "s3": set().union(*(table[f"${{MediaBucket.Arn}}{path}"] for path in S3_RESOURCES)),
        "events": table["${JobEventBus.Arn}"] & table[NAMED_BUS_ARN],
    }
    missing = {action for action in needed if action not in on[action.split(":")[0]]}
    assert missing == set(), "the worker calls these but its role does not allow them"
    operator = {a for actions in allowed(template, "OperatorPolicy").values() for a in actions}
    assert operator >= OPERATOR_ONLY


def test_lambda_roles_grant_exactly_what_the_lambdas_call(template: dict[str, Any]) -> None:
    logs = {"logs:CreateLogStream", "logs:PutLogEvents"}
    assert allowed(template, "EnqueueRole") == {
        "${JobsTable.Arn}": {"dynamodb:PutItem", "dynamodb:GetItem"},
        "${JobsQueue.Arn}": {"sqs:SendMessage"},
        "${EnqueueFailureQueue.Arn}": {"sqs:SendMessage"},
        "${EnqueueLogGroup.Arn}": logs,
        **EVENT_BUS_GRANTS,
    }
    assert allowed(template, "DeadLetterRole") == {
        "${JobsDeadLetterQueue.Arn}": {
            "sqs:ReceiveMessage",
            "sqs:DeleteMessage",
            "sqs:GetQueueAttributes",
        },
        "${JobsTable.Arn}": {"dynamodb:GetItem", "dynamodb:PutItem"},
        "${DeadLetterLogGroup.Arn}": logs,
        **EVENT_BUS_GRANTS,
    }
    sampler = allowed(template, "SamplerRole")
    assert sampler["${WorkerService}"] == {"ecs:DescribeServices", "ecs:UpdateService"}
    assert sampler["${JobsQueue.Arn}"] == {"sqs:GetQueueAttributes"}
    assert sampler["*"] == {"cloudwatch:PutMetricData"}
    (clock,) = [g for g in grants(template, "SamplerRole") if "dynamodb:UpdateItem" in g.actions]
    assert clock.condition == {"ForAllValues:StringEquals": {"dynamodb:LeadingKeys": ["SCALER"]}}


def test_the_sampler_may_set_the_desired_count_only_in_direct_mode(
    template: dict[str, Any],
) -> None:
    (policy,) = props(template, "SamplerRole")["Policies"]
    conditional = [s for s in policy["PolicyDocument"]["Statement"] if "Fn::If" in s]
    assert len(conditional) == 1
    condition, granted, otherwise = conditional[0]["Fn::If"]
    assert condition == "DirectMode"
    assert granted["Action"] == "ecs:UpdateService"
    assert otherwise == {"Ref": "AWS::NoValue"}
    assert template["Conditions"]["DirectMode"] == {"Fn::Equals": [{"Ref": "ScaleMode"}, "direct"]}


def test_the_execution_role_pulls_only_this_stacks_image(template: dict[str, Any]) -> None:
    assert allowed(template, "WorkerExecutionRole") == {
        "*": {"ecr:GetAuthorizationToken"},
        "arn:${AWS::Partition}:ecr:${AWS::Region}:${AWS::AccountId}:repository/"
        "${ImageRepositoryName}": {
            "ecr:BatchCheckLayerAvailability",
            "ecr:BatchGetImage",
            "ecr:GetDownloadUrlForLayer",
        },
        "${WorkerLogGroup.Arn}": {"logs:CreateLogStream", "logs:PutLogEvents"},
    }


# ---------------------------------------------------------------------------- template: lint


def test_cfn_lint_reports_nothing(template: dict[str, Any]) -> None:
    from cfnlint.api import ManualArgs, lint_file

    # Errors and warnings. (The template is also clean of informational checks today,
    # `cfn-lint --include-checks I -- deploy/template.yaml`, but those change between releases.)
    matches = lint_file(TEMPLATE, config=ManualArgs(regions=["us-east-1"]))
    assert [str(match) for match in matches] == []


def test_cfn_lint_is_really_looking() -> None:
    """The same linter finds a planted error, so a clean result above means something."""
    from cfnlint.api import ManualArgs, lint

    broken = TEMPLATE.read_text(encoding="utf-8").replace(
        "ReceiveMessageWaitTimeSeconds: 20", "ReceiveMessageWaitTimeSecs: 20"
    )
    matches = lint(broken, config=ManualArgs(regions=["us-east-1"]))
    assert any("ReceiveMessageWaitTimeSecs" in str(match) for match in matches)


# ---------------------------------------------------------------------------- template: contents


def test_bucket_is_private_encrypted_tls_only_versioned_and_reaps_multipart(
    template: dict[str, Any],
) -> None:
    bucket = props(template, "MediaBucket")
    assert set(bucket["PublicAccessBlockConfiguration"].values()) == {True}
    assert len(bucket["PublicAccessBlockConfiguration"]) == 4
    (sse,) = bucket["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert sse["ServerSideEncryptionByDefault"]["SSEAlgorithm"] in ("AES256", "aws:kms")
    assert bucket["VersioningConfiguration"]["Status"] == "Enabled"
    rules = bucket["LifecycleConfiguration"]["Rules"]
    assert {"DaysAfterInitiation": 1} in [r.get("AbortIncompleteMultipartUpload") for r in rules]
    (deny,) = props(template, "MediaBucketPolicy")["PolicyDocument"]["Statement"]
    assert deny["Effect"] == "Deny"
    assert deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    assert template["Resources"]["MediaBucket"]["DeletionPolicy"] == "Retain"


def test_player_origins_get_cors_for_reading_only_when_set(template: dict[str, Any]) -> None:
    """hls.js fetches the stream cross-origin: the app's origins may GET/HEAD, nothing else."""
    condition, when_set, otherwise = props(template, "MediaBucket")["CorsConfiguration"]["Fn::If"]
    assert condition == "HasPlayerOrigins"
    assert otherwise == {"Ref": "AWS::NoValue"}
    (rule,) = when_set["CorsRules"]
    assert rule["AllowedMethods"] == ["GET", "HEAD"]
    assert rule["AllowedOrigins"] == {"Ref": "PlayerOrigins"}
    assert "Content-Range" in rule["ExposedHeaders"]
    assert template["Parameters"]["PlayerOrigins"]["Default"] == ""


def test_raw_uploads_invoke_the_enqueue_lambda(template: dict[str, Any]) -> None:
    function = props(template, "EnqueueFunction")
    assert function["Handler"] == "enqueue_lambda.handler.handler"
    (event,) = function["Events"].values()
    assert event["Type"] == "S3"
    assert event["Properties"]["Bucket"] == {"Ref": "MediaBucket"}
    # Deletions too: an upload deleted before it was published must never be (source_deleted).
    assert event["Properties"]["Events"] == ["s3:ObjectCreated:*", "s3:ObjectRemoved:*"]
    rules = event["Properties"]["Filter"]["S3Key"]["Rules"]
    assert rules == [{"Name": "prefix", "Value": "raw/"}]
    failure = function["EventInvokeConfig"]["DestinationConfig"]["OnFailure"]
    assert failure["Destination"] == {"Fn::GetAtt": ["EnqueueFailureQueue", "Arn"]}


def test_queues_match_the_worker_contract(template: dict[str, Any]) -> None:
    defaults = Settings()
    jobs, dlq = props(template, "JobsQueue"), props(template, "JobsDeadLetterQueue")
    env = env_of_container(template)
    assert jobs["VisibilityTimeout"] == defaults.visibility_timeout_s
    assert int(env["TRANSCODER_VISIBILITY_TIMEOUT_S"]) == jobs["VisibilityTimeout"]
    assert jobs["ReceiveMessageWaitTimeSeconds"] == defaults.wait_time_s == 20
    assert int(env["TRANSCODER_WAIT_TIME_S"]) == jobs["ReceiveMessageWaitTimeSeconds"]
    assert jobs["RedrivePolicy"] == {
        "deadLetterTargetArn": {"Fn::GetAtt": ["JobsDeadLetterQueue", "Arn"]},
        "maxReceiveCount": defaults.max_receive_count,
    }
    assert int(env["TRANSCODER_MAX_RECEIVE_COUNT"]) == defaults.max_receive_count
    assert dlq["MessageRetentionPeriod"] == DLQ_RETENTION_S == 14 * 24 * 3600
    assert dlq["MessageRetentionPeriod"] > jobs["MessageRetentionPeriod"]
    assert jobs["SqsManagedSseEnabled"] is dlq["SqsManagedSseEnabled"] is True
    # Lambda's SQS event source refuses a queue whose visibility is below the function timeout.
    timeout = template["Globals"]["Function"]["Timeout"]
    assert dlq["VisibilityTimeout"] >= 6 * props(template, "DeadLetterFunction").get(
        "Timeout", timeout
    )


def test_dead_letters_alarm_on_any_message(template: dict[str, Any]) -> None:
    alarm = props(template, "DeadLetterAlarm")
    assert alarm["Threshold"] == 1
    assert alarm["ComparisonOperator"] == "GreaterThanOrEqualToThreshold"
    watched = {
        (m["MetricStat"]["Metric"]["MetricName"], render(d["Value"]))
        for m in alarm["Metrics"]
        if "MetricStat" in m
        for d in m["MetricStat"]["Metric"]["Dimensions"]
    }
    assert ("ApproximateNumberOfMessagesVisible", "${JobsDeadLetterQueue.QueueName}") in watched
    handler = props(template, "DeadLetterFunction")
    assert handler["Handler"] == "enqueue_lambda.dlq.handler"
    (event,) = handler["Events"].values()
    assert event["Properties"]["FunctionResponseTypes"] == ["ReportBatchItemFailures"]


def test_table_is_on_demand_with_pitr_and_the_status_index(template: dict[str, Any]) -> None:
    table = props(template, "JobsTable")
    assert table["BillingMode"] == "PAY_PER_REQUEST"
    assert table["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
    keys = {k["AttributeName"]: k["KeyType"] for k in table["KeySchema"]}
    assert keys == {"pk": "HASH", "sk": "RANGE"}
    (index,) = table["GlobalSecondaryIndexes"]
    assert index["IndexName"] == STATUS_INDEX
    assert {k["AttributeName"]: k["KeyType"] for k in index["KeySchema"]} == {
        "status": "HASH",
        "updated_at": "RANGE",
    }
    assert index["Projection"] == {"ProjectionType": "ALL"}


def test_task_definition_is_safe_to_stop(template: dict[str, Any]) -> None:
    task = props(template, "WorkerTaskDefinition")
    assert template["Parameters"]["TaskCpu"]["Default"] == "1024"
    assert template["Parameters"]["TaskMemory"]["Default"] == 2048
    (container,) = task["ContainerDefinitions"]
    env = env_of_container(template)
    assert container["StopTimeout"] == 120
    assert float(env["TRANSCODER_SHUTDOWN_GRACE_S"]) < container["StopTimeout"]
    assert container["LinuxParameters"]["InitProcessEnabled"] is True
    assert container["LogConfiguration"]["LogDriver"] == "awslogs"
    log_group = props(template, container["LogConfiguration"]["Options"]["awslogs-group"]["Ref"])
    assert log_group["RetentionInDays"] == {"Ref": "LogRetentionDays"}
    port = int(env["TRANSCODER_METRICS_PORT"])
    assert [m["ContainerPort"] for m in container["PortMappings"]] == [port]
    command = container["HealthCheck"]["Command"]
    assert command[0] == "CMD"
    assert f"127.0.0.1:{port}/healthz" in command[-1]


def test_worker_environment_is_exactly_settings_variables(template: dict[str, Any]) -> None:
    env = env_of_container(template)
    unknown = set(env) - settings_variables()
    assert unknown == set()
    literal = {k: v for k, v in env.items() if isinstance(v, str)}
    fields = {
        name: field
        for name, field in Settings.model_fields.items()
        if f"{ENV_PREFIX}{name.upper()}" in literal
    }
    values = {name: literal[f"{ENV_PREFIX}{name.upper()}"] for name in fields}
    parsed = Settings.model_validate(values)  # every literal value is one Settings accepts
    assert parsed.heartbeat_interval_s * 3 <= parsed.visibility_timeout_s


def test_service_scales_from_zero_to_max_through_the_policies(template: dict[str, Any]) -> None:
    service = props(template, "WorkerService")
    # Owned by the scaler: a DesiredCount here would be re-applied by every stack update.
    assert "DesiredCount" not in service
    target = props(template, "ScalableTarget")
    assert target["MinCapacity"] == 0
    assert target["MaxCapacity"] == {"Ref": "MaxTasks"}
    assert template["Parameters"]["MaxTasks"]["Default"] == 10
    scaling = resources_of(template, "AWS::ApplicationAutoScaling::ScalingPolicy")
    alarms = resources_of(template, "AWS::CloudWatch::Alarm")
    for name, policy in scaling.items():
        assert policy["Condition"] == "MetricsMode", name
        triggers = [
            alarm
            for alarm in alarms.values()
            if {"Ref": name} in as_list(alarm["Properties"].get("AlarmActions", []))
        ]
        assert len(triggers) == 1, f"{name} needs exactly one alarm"
    assert set(scaling) == {"WakePolicy", "ScaleOutPolicy", "ScaleInPolicy", "ScaleToZeroPolicy"}
    to_zero = props(template, "ScaleToZeroPolicy")["StepScalingPolicyConfiguration"]
    assert to_zero["AdjustmentType"] == "ExactCapacity"
    assert to_zero["StepAdjustments"] == [{"MetricIntervalUpperBound": 0, "ScalingAdjustment": 0}]
    quiet = props(template, "ScaleToZeroAlarm")
    assert quiet["MetricName"] == "OutstandingMessages"
    # A sampler that stops must never look like a quiet queue.
    assert quiet["TreatMissingData"] == "notBreaching"


def published_metrics() -> tuple[str, set[str], set[str]]:
    """(namespace, metric names, dimension names) the real sampler publishes."""
    from autoscaling.policy import Observation, PolicyConfig, decide
    from autoscaling.sampler import Sample, Sampler, SamplerConfig

    calls: list[dict[str, Any]] = []

    class CloudWatch:
        def put_metric_data(self, **kwargs: Any) -> None:
            calls.append(kwargs)

    config = SamplerConfig(queue="https://sqs/1/jobs", cluster="c", service="s", table="t")
    sampler = Sampler(
        config, cast(Any, None), cast(Any, None), cast(Any, CloudWatch()), cast(Any, None)
    )
    observation = Observation(
        visible=3, in_flight=1, delayed=0, running=1, desired=1, busy=1, empty_for_s=0
    )
    decision = decide(observation, PolicyConfig())
    sampler.publish(Sample(at=0.0, observation=observation, decision=decision, applied=False))
    (call,) = calls
    names = {d["MetricName"] for d in call["MetricData"]}
    dimensions = {dim["Name"] for d in call["MetricData"] for dim in d["Dimensions"]}
    return str(call["Namespace"]), names, dimensions


def test_scaling_alarms_watch_metrics_the_sampler_publishes(template: dict[str, Any]) -> None:
    namespace, names, dimension_names = published_metrics()
    watched = []
    for name, alarm in resources_of(template, "AWS::CloudWatch::Alarm").items():
        properties = alarm["Properties"]
        metrics = [properties] + [
            m["MetricStat"]["Metric"] for m in properties.get("Metrics", []) if "MetricStat" in m
        ]
        for metric in metrics:
            if metric.get("Namespace") == "Transcoder":
                watched.append((name, metric["MetricName"]))
                assert metric["Namespace"] == namespace
                assert {d["Name"] for d in metric["Dimensions"]} == dimension_names
                assert [render(d["Value"]) for d in metric["Dimensions"]] == [
                    "${JobsQueue.QueueName}"
                ]
    assert {metric for _, metric in watched} == {
        "WakeSignal",
        "BacklogPerTask",
        "OutstandingMessages",
        "RunningTasks",
    }
    assert {metric for _, metric in watched} <= names


def test_sampler_runs_every_minute_and_on_uploads(template: dict[str, Any]) -> None:
    function = props(template, "SamplerFunction")
    assert function["Handler"] == "autoscaling.sampler.handler"
    events = {e["Type"]: e["Properties"] for e in function["Events"].values()}
    assert events["Schedule"]["Schedule"] == "rate(1 minute)"
    pattern = events["EventBridgeRule"]["Pattern"]
    assert pattern["detail"]["object"]["key"] == [{"prefix": "raw/"}]
    bucket = props(template, "MediaBucket")
    assert bucket["NotificationConfiguration"]["EventBridgeConfiguration"] == {
        "EventBridgeEnabled": True
    }


LAMBDA_CONFIG = {
    "EnqueueFunction": ("enqueue_lambda.config", "EnqueueConfig.from_env"),
    "DeadLetterFunction": ("enqueue_lambda.config", "DeadLetterConfig.from_env"),
    "SamplerFunction": ("autoscaling.sampler", "SamplerConfig.from_env"),
}
PLACEHOLDERS = {
    "JobsQueue": "https://sqs.us-east-1.amazonaws.com/123456789012/stack-JobsQueue-ABC",
    "JobsTable": "stack-JobsTable-ABC",
    "Cluster": "stack-Cluster-ABC",
    "WorkerService.Name": "stack-WorkerService-ABC",
    "MaxInputBytes": "21474836480",
    "ScaleMode": "metrics",
    "SlotsPerTask": "1",
    "MaxTasks": "10",
    "AcceptableLatencySeconds": "300",
    "TypicalJobSeconds": "400",
    "JobEventBus.Name": "stack-jobs",
    "EventBusName": "app-events",
}


def resolved(value: Any, template: Mapping[str, Any], side: int = 1) -> str:
    if isinstance(value, str):
        return value
    if "Fn::If" in value:  # side 1: the condition holds (the stack's own bus), 2: it does not
        return resolved(value["Fn::If"][side], template)
    if "Fn::FindInMap" in value:
        table, key, attribute = value["Fn::FindInMap"]
        default = template["Parameters"][key["Ref"]]["Default"]
        return str(template["Mappings"][table][default][attribute])
    return PLACEHOLDERS[render(value).strip("${}")]


@pytest.mark.parametrize("function", sorted(LAMBDA_CONFIG))
def test_each_lambda_accepts_the_environment_the_template_gives_it(
    template: dict[str, Any], function: str
) -> None:
    properties = props(template, function)
    module_name, handler = properties["Handler"].rsplit(".", 1)
    assert callable(getattr(importlib.import_module(module_name), handler))
    config_module, loader = LAMBDA_CONFIG[function]
    target: Any = importlib.import_module(config_module)
    for part in loader.split("."):
        target = getattr(target, part)
    for side in (1, 2):
        env = {
            name: resolved(value, template, side)
            for name, value in properties["Environment"]["Variables"].items()
        }
        target(env)  # raises ConfigError naming the variable when the template is wrong
    package = ROOT / module_name.split(".")[0]
    source = "\n".join(p.read_text(encoding="utf-8") for p in package.glob("*.py"))
    unread = [name for name in env if name not in source]
    assert unread == [], f"{function} gets variables its code never reads"


def test_lambda_code_uri_is_where_the_build_script_writes(template: dict[str, Any]) -> None:
    build = (ROOT / "deploy" / "lambda" / "build.py").read_text(encoding="utf-8")
    assert '"dist" / "lambda" / "functions.zip"' in build
    for name in LAMBDA_CONFIG:
        # On each function, not in Globals: packagers upload only what resources name.
        code_uri = props(template, name)["CodeUri"]
        assert (TEMPLATE.parent / code_uri).resolve() == ROOT / "dist" / "lambda" / "functions.zip"
        assert props(template, name).get("Runtime", template["Globals"]["Function"]["Runtime"]) == (
            "python3.11"
        )


# ---------------------------------------------------------------------------- Dockerfile


@dataclass(frozen=True)
class Instruction:
    keyword: str
    argument: str


def dockerfile_stages(path: Path = DOCKERFILE) -> list[list[Instruction]]:
    """Instructions per build stage (line continuations joined, comments dropped)."""
    logical: list[str] = []
    pending = ""
    for line in path.read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        logical.append(pending + stripped)
        pending = ""
    stages: list[list[Instruction]] = []
    for line in logical:
        keyword, _, argument = line.partition(" ")
        if keyword.upper() == "FROM":
            stages.append([])
        if stages:
            stages[-1].append(Instruction(keyword.upper(), argument.strip()))
    return stages


def last(stage: list[Instruction], keyword: str) -> str:
    found = [i.argument for i in stage if i.keyword == keyword]
    assert found, f"no {keyword} in the final stage"
    return found[-1]


def test_dockerfile_runs_the_worker_exec_form_under_an_init_as_non_root() -> None:
    stages = dockerfile_stages()
    assert len(stages) >= 2, "multi-stage build"
    final = stages[-1]
    entrypoint = json.loads(last(final, "ENTRYPOINT"))  # exec form is a JSON array
    command = json.loads(last(final, "CMD"))
    assert isinstance(entrypoint, list) and isinstance(command, list)
    assert entrypoint[0] == "/usr/bin/tini"
    assert entrypoint[-1] == "transcoder" and command == ["worker"]
    user = last(final, "USER").split(":")[0]
    assert user not in ("root", "0", "")
    healthcheck = last(final, "HEALTHCHECK")
    probe = json.loads(healthcheck.split(" CMD ", 1)[1])
    assert "/healthz" in probe[-1]
    assert str(Settings().metrics_port) in last(final, "EXPOSE")


def test_dockerfile_final_stage_has_ffmpeg_and_no_build_tools() -> None:
    final = dockerfile_stages()[-1]
    runs = " ".join(i.argument for i in final if i.keyword == "RUN")
    assert re.search(r"\bffmpeg\b", runs) and re.search(r"\btini\b", runs)
    assert "--no-install-recommends" in runs and "rm -rf /var/lib/apt/lists" in runs
    for tool in ("gcc", "build-essential", "pip install", "make ", "git "):
        assert tool not in runs, tool
    copies = [i.argument for i in final if i.keyword == "COPY"]
    assert copies == ["--from=build /opt/venv /opt/venv"], "only the built venv is copied in"


def dockerignore_allows(path: str) -> bool:
    allowed_now = True
    for raw in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines():
        pattern = raw.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        regex = re.escape(pattern).replace(r"\*\*/", "(.*/)?").replace(r"\*", "[^/]*")
        if re.fullmatch(regex, path) or re.match(regex + "/", path):
            allowed_now = negate
    return allowed_now


def test_every_copied_path_exists_and_is_in_the_build_context() -> None:
    for stage in dockerfile_stages():
        for instruction in stage:
            if instruction.keyword != "COPY" or instruction.argument.startswith("--from"):
                continue
            *sources, _ = instruction.argument.split()
            for source in sources:
                assert (ROOT / source).exists(), source
                assert dockerignore_allows(source.rstrip("/")), f".dockerignore drops {source}"
    for secret in (".git", ".venv", "tests", "benchmarks/results", ".env"):
        assert not dockerignore_allows(secret), secret


# ---------------------------------------------------------------------------- docker-compose


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    document = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    assert isinstance(document, dict)
    return document


def interpolated(value: Any) -> str:
    """Compose's ``${NAME:-default}`` with no host variables set."""
    return re.sub(r"\$\{[A-Z0-9_]+:-([^}]*)\}", r"\1", str(value))


APP_SERVICES = ("init", "relay", "worker")
AWS_VARIABLES = {
    "AWS_ENDPOINT_URL",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_REQUEST_CHECKSUM_CALCULATION",  # LocalStack 3.8 and the SDK's default checksums
    "AWS_RESPONSE_CHECKSUM_VALIDATION",
}
ENQUEUE_ONLY = {"TRANSCODER_ALLOWED_EXTENSIONS", "TRANSCODER_RENDITIONS"}


def test_compose_pins_every_image_and_localstack_runs_only_what_is_used(
    compose: dict[str, Any],
) -> None:
    services = compose["services"]
    for name, service in services.items():
        image = service["image"]
        assert ":" in image and not image.endswith(":latest"), name
    localstack = services["localstack"]
    assert re.fullmatch(r"localstack/localstack:\d+\.\d+\.\d+", localstack["image"])
    conftest = (ROOT / "tests" / "conftest.py").read_text(encoding="utf-8")
    assert localstack["image"] in conftest, "the compose stack and the test backend differ"
    assert sorted(localstack["environment"]["SERVICES"].split(",")) == ["dynamodb", "s3", "sqs"]


def test_compose_environment_is_settings_variables_only(compose: dict[str, Any]) -> None:
    known = settings_variables()
    for name in APP_SERVICES:
        service = compose["services"][name]
        assert service["image"] == "transcoder:local" and service["build"]["context"] == "."
        env = {key: interpolated(value) for key, value in service["environment"].items()}
        prefixed = {key for key in env if key.startswith(ENV_PREFIX)}
        allowed_extra = ENQUEUE_ONLY if name == "relay" else set()
        assert prefixed - known - allowed_extra == set(), name
        assert set(env) - prefixed <= AWS_VARIABLES, name
        assert env["AWS_ENDPOINT_URL"] == "http://localstack:4566"
        parsed = Settings.model_validate(
            {
                field: env[f"{ENV_PREFIX}{field.upper()}"]
                for field in Settings.model_fields
                if f"{ENV_PREFIX}{field.upper()}" in env
            }
        )
        assert parsed.bucket == "transcoder-media"


def test_compose_worker_scales_and_stops_gracefully(compose: dict[str, Any]) -> None:
    worker = compose["services"]["worker"]
    assert "container_name" not in worker and "ports" not in worker
    assert worker["command"] == ["worker"]
    grace = float(interpolated(worker["environment"]["TRANSCODER_SHUTDOWN_GRACE_S"]))
    assert int(worker["stop_grace_period"].rstrip("s")) > grace
    assert worker["depends_on"]["init"]["condition"] == "service_completed_successfully"


def test_compose_init_bootstraps_and_wires_raw_notifications(compose: dict[str, Any]) -> None:
    init, relay = compose["services"]["init"], compose["services"]["relay"]
    script = " ".join(init["command"])
    assert "transcoder bootstrap" in script and "python -m enqueue_lambda.relay wire" in script
    assert relay["entrypoint"][-3:] == ["python", "-m", "enqueue_lambda.relay"]
    assert relay["command"] == ["run"]
    from enqueue_lambda import relay as relay_module

    assert relay_module.UPLOADS_QUEUE  # the module the compose file runs exists and imports


def test_prometheus_scrapes_every_worker_replica(compose: dict[str, Any]) -> None:
    prometheus = compose["services"]["prometheus"]
    (mount,) = prometheus["volumes"]
    source = mount.split(":")[0]
    config = yaml.safe_load((ROOT / source).read_text(encoding="utf-8"))
    (job,) = config["scrape_configs"]
    (discovery,) = job["dns_sd_configs"]
    assert discovery["names"] == ["worker"] and discovery["type"] == "A"
    assert discovery["port"] == Settings().metrics_port
    assert job["metrics_path"] == "/metrics"


# ---------------------------------------------------------------------------- job events


EVENT_PUBLISHERS = {"WorkerTaskRole", "EnqueueRole", "DeadLetterRole"}
BUS_VALUE = {
    "Fn::If": ["CreateEventBus", {"Fn::GetAtt": ["JobEventBus", "Name"]}, {"Ref": "EventBusName"}]
}


def test_job_events_go_to_one_bus_which_only_their_publishers_may_write(
    template: dict[str, Any],
) -> None:
    bus = template["Resources"]["JobEventBus"]
    assert bus["Type"] == "AWS::Events::EventBus" and bus["Condition"] == "CreateEventBus"
    assert template["Conditions"]["CreateEventBus"] == {"Fn::Equals": [{"Ref": "EventBusName"}, ""]}
    assert template["Parameters"]["EventBusName"]["Default"] == ""
    writers = {
        where.split("/")[0]
        for where, statement in role_statements(template)
        if "events:PutEvents" in as_list(statement.get("Action", []))
    }
    assert writers == EVENT_PUBLISHERS
    for role in EVENT_PUBLISHERS:
        (policy,) = props(template, role)["Policies"]
        (conditional,) = [s for s in policy["PolicyDocument"]["Statement"] if "Fn::If" in s]
        condition, own, named = conditional["Fn::If"]
        assert condition == "CreateEventBus"
        assert render(own["Resource"]) == "${JobEventBus.Arn}", role
        assert render(named["Resource"]) == NAMED_BUS_ARN, role
    # ...and each of them is told that same bus: the stack's own by name, or the named one.
    assert env_of_container(template)["TRANSCODER_EVENT_BUS"] == BUS_VALUE
    for function in ("EnqueueFunction", "DeadLetterFunction"):
        variables = props(template, function)["Environment"]["Variables"]
        assert variables["TRANSCODER_EVENT_BUS"] == BUS_VALUE, function


def test_an_event_that_was_not_sent_raises_the_alarm(template: dict[str, Any]) -> None:
    filters = resources_of(template, "AWS::Logs::MetricFilter")
    watched = {render(f["Properties"]["LogGroupName"]) for f in filters.values()}
    assert watched == {"${WorkerLogGroup}", "${EnqueueLogGroup}", "${DeadLetterLogGroup}"}
    for resource in filters.values():
        pattern = resource["Properties"]["FilterPattern"]
        logged = pattern.strip('"')
        for source in ("transcoder/aws/bus.py", "enqueue_lambda/bus.py"):
            assert f'"{logged}"' in (ROOT / source).read_text(encoding="utf-8"), source
        (metric,) = resource["Properties"]["MetricTransformations"]
        alarm = props(template, "EventPublishFailedAlarm")
        assert (metric["MetricNamespace"], metric["MetricName"]) == (
            alarm["Namespace"],
            alarm["MetricName"],
        )
    assert props(template, "EventPublishFailedAlarm")["Threshold"] == 1
