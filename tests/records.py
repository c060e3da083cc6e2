"""Test helpers for reading and poking job records directly, as another writer would.

``as_dict`` turns a stored item into the typed ``JobRecord``'s JSON form (absent fields left out),
so assertions read like the table. ``poke`` is an out-of-band write; it bumps ``rev`` as every
real writer does (the optimistic-concurrency token), so workers notice it as they would another
writer's change.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from transcoder.domain.record import from_item, record_key, value


def as_dict(item: Mapping[str, Any]) -> dict[str, Any]:
    return from_item(item).model_dump(mode="json", exclude_none=True)


def poke_arguments(table: str, user: str, video: str, **values: Any) -> dict[str, Any]:
    """UpdateItem arguments that SET ``values`` and bump ``rev``."""
    sets = [f"#{k} = :{k}" for k in values] + ["#rev = if_not_exists(#rev, :zero) + :one"]
    attributes = {f":{k}": value(v) for k, v in values.items()}
    attributes.update({":zero": value(0), ":one": value(1)})
    return {
        "TableName": table,
        "Key": record_key(user, video),
        "UpdateExpression": "SET " + ", ".join(sets),
        "ExpressionAttributeNames": {f"#{k}": k for k in [*values, "rev"]},
        "ExpressionAttributeValues": attributes,
    }
