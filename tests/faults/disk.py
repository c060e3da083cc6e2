"""A real nearly-full disk for a worker's scratch: a small tmpfs that something else has filled.

Mounting needs root or CAP_SYS_ADMIN; where it is refused the caller skips and says why.
"""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from pathlib import Path

KIB, MIB = 1024, 1024**2


@contextlib.contextmanager
def nearly_full_tmpfs(mount: Path, *, size_mib: int = 32, free_kib: int = 256) -> Iterator[Path]:
    """``mount`` as a ``size_mib`` tmpfs with only ``free_kib`` left; unmounted on exit.

    Raises ``PermissionError`` (with the mount's own message) where mounting is not allowed.
    """
    mount.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_mib}m", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        raise PermissionError(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        (mount / "filler.bin").write_bytes(b"\0" * (size_mib * MIB - free_kib * KIB))
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)
