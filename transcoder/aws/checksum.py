"""CRC32 for S3's own upload checksums: computed as the SDK streams a file, combined per object.

S3 checks a declared CRC32 against the bytes it received and stores it with the object; a
multipart upload created with ``ChecksumType=FULL_OBJECT`` gets the CRC32 of the whole object,
which S3 derives from the parts' CRCs. We derive the same value the same way (``crc32_combine``),
so verifying an upload never reads the file a second time.
"""

from __future__ import annotations

import base64
import io
import zlib
from pathlib import Path
from typing import Any

# CRC-32 (IEEE, reflected): the polynomial zlib and S3's ``CRC32`` use.
_POLYNOMIAL = 0xEDB88320


def crc32_b64(value: int) -> str:
    """S3's wire form of a CRC32: base64 of its four big-endian bytes."""
    return base64.b64encode(value.to_bytes(4, "big")).decode("ascii")


def _gf2_times(matrix: list[int], vector: int) -> int:
    total, row = 0, 0
    while vector:
        if vector & 1:
            total ^= matrix[row]
        vector >>= 1
        row += 1
    return total


def _gf2_square(matrix: list[int]) -> list[int]:
    return [_gf2_times(matrix, row) for row in matrix]


def crc32_combine(crc1: int, crc2: int, length2: int) -> int:
    """CRC32 of ``A + B`` from ``crc32(A)``, ``crc32(B)`` and ``len(B)`` (zlib's algorithm).

    Appending ``length2`` zero bytes to A is a linear map on its CRC; it is applied by squaring
    the one-zero-bit operator, so the cost is logarithmic in ``length2`` and reads no data.
    """
    if length2 <= 0:
        return crc1
    odd = [_POLYNOMIAL] + [1 << n for n in range(31)]  # one zero bit
    even = _gf2_square(odd)  # two zero bits
    odd = _gf2_square(even)  # four zero bits
    while True:
        even = _gf2_square(odd)  # this bit of length2, in bytes: 1, 4, 16, ... zero bytes
        if length2 & 1:
            crc1 = _gf2_times(even, crc1)
        length2 >>= 1
        if not length2:
            break
        odd = _gf2_square(even)
        if length2 & 1:
            crc1 = _gf2_times(odd, crc1)
        length2 >>= 1
        if not length2:
            break
    return crc1 ^ crc2


def composite_crc32(part_crcs: list[int]) -> str:
    """S3's COMPOSITE multipart checksum: the CRC32 of the parts' CRCs, ``-N`` appended."""
    joined = b"".join(crc.to_bytes(4, "big") for crc in part_crcs)
    return f"{crc32_b64(zlib.crc32(joined))}-{len(part_crcs)}"


class FileSlice(io.RawIOBase):
    """A read-only, seekable window onto part of a file: a request body streamed from disk.

    Passing a file (or a slice of one) as the request body lets the SDK and aiohttp stream it in
    small chunks, so an upload never holds a whole part or rendition in memory. The window hashes
    what is read through it: once the SDK has read it from start to end (to send it, or to
    compute the checksum it declares), ``crc32`` is the CRC32 of exactly those bytes.
    """

    def __init__(self, path: Path, offset: int, length: int) -> None:
        super().__init__()
        self._handle = path.open("rb")
        self._start = offset
        self._length = max(0, min(length, path.stat().st_size - offset))
        self._position = 0
        self._crc = 0
        self._hashed = 0  # bytes [0, _hashed) of the window are in _crc

    def __len__(self) -> int:
        return self._length

    @property
    def crc32(self) -> int:
        if self._hashed != self._length:
            raise RuntimeError(f"read {self._hashed} of {self._length} bytes: no CRC yet")
        return self._crc

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: self._length}[whence]
        self._position = max(0, min(self._length, base + offset))
        return self._position

    def read(self, size: int | None = -1) -> bytes:
        remaining = self._length - self._position
        size = remaining if size is None or size < 0 else min(size, remaining)
        self._handle.seek(self._start + self._position)
        data = self._handle.read(size)
        self._hash(self._position, data)
        self._position += len(data)
        return data

    def _hash(self, position: int, data: bytes) -> None:
        # A retry or a checksum pass reads again from the top; a read elsewhere re-reads bytes
        # already hashed (the file does not change) or leaves a gap, which ``crc32`` refuses.
        if position == 0:
            self._crc, self._hashed = 0, 0
        if position == self._hashed:
            self._crc = zlib.crc32(data, self._crc)
            self._hashed += len(data)

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        self._handle.close()
        super().close()
