"""The real ffprobe on tiny files made here with ffmpeg (< 1 s of work), so what ffprobe actually
reports (display matrix sign, misdetection warning) is pinned."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from transcoder.domain.errors import InputRejected
from transcoder.domain.job import Reason
from transcoder.media import probe


def make(path: Path, *args: str) -> Path:
    subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-y", *args, str(path)], check=True, timeout=60
    )
    return path


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("probe")
    source = ("-f", "lavfi", "-i", "testsrc2=size=320x180:rate=25:duration=1")
    return make(folder / "clip.mp4", *source, "-c:v", "libx264", "-preset", "ultrafast")


async def test_real_ffprobe_reports_the_display_matrix_written_for_a_rotate_tag(
    clip: Path, tmp_path: Path
) -> None:
    rotated = make(tmp_path / "r.mp4", "-i", str(clip), "-c", "copy", "-metadata:s:v", "rotate=270")
    info = probe.parse(await probe.run(str(rotated), timeout_s=30), size_bytes=1)
    assert (info.rotation, info.display_width, info.display_height) == (90, 180, 320)


async def test_real_ffprobe_tells_a_cut_mp4_from_a_text_file(clip: Path, tmp_path: Path) -> None:
    moov_last = make(tmp_path / "m.mp4", "-i", str(clip), "-c", "copy")  # moov at the end
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(moov_last.read_bytes()[: moov_last.stat().st_size // 2])
    text = tmp_path / "text.mp4"
    text.write_text("not a video\n")
    for path, reason in ((cut, Reason.TRUNCATED), (text, Reason.NOT_A_VIDEO)):
        with pytest.raises(InputRejected) as rejected:
            await probe.run(str(path), timeout_s=30)
        assert rejected.value.reason == reason, path.name
