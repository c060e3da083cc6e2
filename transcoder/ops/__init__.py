"""Operator-facing entry points: the CLI, commands, demo, bootstrap, the local emulator."""
