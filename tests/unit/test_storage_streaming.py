"""Uploads stream renditions from disk instead of holding them in memory."""

from __future__ import annotations

import io
import os
from pathlib import Path

from transcoder.aws.storage import FileSlice


def test_file_slice_is_a_seekable_window(tmp_path: Path) -> None:
    path = tmp_path / "data.bin"
    data = os.urandom(10_000)
    path.write_bytes(data)
    with FileSlice(path, 1_000, 3_000) as window:
        assert len(window) == 3_000
        assert window.read(10) == data[1_000:1_010]
        assert window.tell() == 10
        window.seek(0)
        assert window.read() == data[1_000:4_000]
        assert window.read(5) == b""
        window.seek(-5, io.SEEK_END)
        assert window.read() == data[3_995:4_000]
    with FileSlice(path, 9_000, 5_000) as tail:  # clipped at the end of the file
        assert len(tail) == 1_000
        assert tail.read() == data[9_000:]
