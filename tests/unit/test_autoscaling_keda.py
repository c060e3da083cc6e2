"""The KEDA manifest: scale from zero on one message, count in-flight work, size like the policy."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from autoscaling.policy import PolicyConfig

MANIFEST = Path(__file__).resolve().parents[2] / "deploy" / "keda-scaledobject.yaml"


def documents() -> dict[str, dict[str, Any]]:
    return {doc["kind"]: doc for doc in yaml.safe_load_all(MANIFEST.read_text())}


def test_scaled_object_activates_on_one_message_and_counts_in_flight() -> None:
    scaled = documents()["ScaledObject"]
    spec = scaled["spec"]
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    assert spec["minReplicaCount"] == 0
    (trigger,) = spec["triggers"]
    assert trigger["type"] == "aws-sqs-queue"
    metadata = trigger["metadata"]
    assert metadata["activationQueueLength"] == "0"  # active above zero: one message wakes it
    assert metadata["scaleOnInFlight"] == "true"
    assert all(isinstance(value, str) for value in metadata.values())  # KEDA wants strings
    assert (
        trigger["authenticationRef"]["name"]
        == documents()["TriggerAuthentication"]["metadata"]["name"]
    )


def test_keda_sizing_matches_the_policy_defaults() -> None:
    spec = documents()["ScaledObject"]["spec"]
    defaults = PolicyConfig()
    assert int(spec["triggers"][0]["metadata"]["queueLength"]) == defaults.messages_per_task
    assert spec["cooldownPeriod"] == defaults.quiet_period_s
    assert spec["maxReplicaCount"] == defaults.max_tasks
