"""The ladder's definition, read by the worker (``Settings.ladder``) and the enqueue Lambda alike.

Both read ``TRANSCODER_LADDER`` (JSON, a list of rungs) or take ``DEFAULT_LADDER``, so a rendition
the Lambda puts in a message is one the worker knows: the Lambda refuses, at start-up, a
``TRANSCODER_RENDITIONS`` entry that is not a rung's name.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter


class Rung(BaseModel):
    """One rung of the ladder: its name, the short side in pixels, and its rate control."""

    model_config = ConfigDict(frozen=True)

    name: str = Field(pattern=r"^[1-9][0-9]{2,3}p$")
    short_side: int = Field(ge=144, le=4320)
    crf: int = Field(ge=0, le=51)
    maxrate_kbps: int = Field(ge=100)
    bufsize_kbps: int = Field(ge=100)


# CRF 21 with x264 "veryfast": in the preset x CRF sweep (benchmarks/results, docs/benchmarks.md)
# it was the only point that reached VMAF 93 at 1080p for the CPU of the old CRF 23 default;
# "faster" CRF 23 also reaches it but costs 1.4x the CPU-seconds, which is most of the bill.
DEFAULT_LADDER: tuple[Rung, ...] = (
    Rung(name="720p", short_side=720, crf=21, maxrate_kbps=4_500, bufsize_kbps=9_000),
    Rung(name="1080p", short_side=1080, crf=21, maxrate_kbps=7_800, bufsize_kbps=15_600),
)

LADDER_ADAPTER: TypeAdapter[tuple[Rung, ...]] = TypeAdapter(tuple[Rung, ...])


def ladder_from_json(text: str | None) -> tuple[Rung, ...]:
    """``TRANSCODER_LADDER``'s value (JSON) or the default; raises ValueError when invalid."""
    if not text:
        return DEFAULT_LADDER
    ladder = LADDER_ADAPTER.validate_json(text)
    names = [rung.name for rung in ladder]
    if not names or len(set(names)) != len(names):
        raise ValueError("the ladder needs at least one rung and unique names")
    return ladder
