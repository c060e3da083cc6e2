"""Every ``transcoder`` command says what it does in its own ``--help``, not only in the list."""

from __future__ import annotations

import argparse

from transcoder.ops.cli import parser


def commands(root: argparse.ArgumentParser, path: str = "") -> dict[str, argparse.ArgumentParser]:
    found = {}
    for action in root._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found[f"{path}{name}"] = sub
                found.update(commands(sub, f"{path}{name} "))
    return found


def test_every_command_and_group_has_a_description_and_every_argument_help() -> None:
    found = commands(parser())
    assert {"worker", "status", "retry", "dlq", "dlq redrive", "autoscale", "demo"} <= set(found)
    groups = {
        name
        for name, sub in found.items()
        if any(isinstance(a, argparse._SubParsersAction) for a in sub._actions)
    }
    undescribed = sorted(
        n for n in groups | {"worker", "status", "retry", "demo"} if not found[n].description
    )
    assert undescribed == []
    unexplained = sorted(
        f"{name} {action.dest}"
        for name, sub in found.items()
        for action in sub._actions
        if not isinstance(action, argparse._HelpAction | argparse._SubParsersAction)
        and name.split()[0] in {"status", "retry", "dlq"}
        and not action.help
    )
    assert unexplained == []
