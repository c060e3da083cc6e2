"""`transcoder demo` where the sample fetcher or the emulator is not installed (the image)."""

from __future__ import annotations

import importlib.util
from importlib.machinery import ModuleSpec

import pytest

from transcoder.ops import extras
from transcoder.ops.emulator import running_emulator


def hide(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    real = importlib.util.find_spec

    def find_spec(module: str, package: str | None = None) -> ModuleSpec | None:
        return None if module == name else real(module, package)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)


def test_demo_without_videos_names_what_to_pass(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    hide(monkeypatch, "samples")
    with pytest.raises(SystemExit) as exited:
        extras.ensure_samples()
    assert exited.value.code == 2
    message = capsys.readouterr().err
    assert "no videos given" in message
    assert "transcoder demo /videos/clip.mp4" in message


def test_demo_without_an_endpoint_names_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    hide(monkeypatch, "moto")
    with pytest.raises(SystemExit) as exited, running_emulator():
        pass
    assert exited.value.code == 2
    assert "AWS_ENDPOINT_URL" in capsys.readouterr().err
