"""Helpers of the streaming archive writer's tests (``test_archive_*.py``): reproducible payloads fed in
irregular chunks, an archive built in memory, and its members read back with Python's own readers."""

from __future__ import annotations

import io
import itertools
import random
import tarfile
import zipfile
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime

from offboarding.archive import ArchiveWriter

KiB = 1 << 10
MiB = 1 << 20
GiB = 1 << 30
WHEN = datetime(2024, 5, 6, 7, 8, 10, tzinfo=UTC)

Chunk = bytes | memoryview


def payload(size: int) -> bytes:
    return random.Random(size).randbytes(size)


def chunked(data: bytes) -> Iterator[Chunk]:
    """Irregular chunks, bytes and memoryviews in turn, crossing every boundary the writer may care about."""
    view = memoryview(data)
    sizes = itertools.cycle([1, 4095, 64 * KiB, 300_000, 7])
    at = 0
    for number in itertools.count():
        if at >= len(data):
            return
        piece = view[at : at + next(sizes)]
        yield piece if number % 2 else bytes(piece)
        at += len(piece)


def build(fmt: str, members: Iterable[tuple[str, bytes]], mtime: datetime = WHEN) -> bytes:
    writer = ArchiveWriter(fmt)
    pieces: list[bytes] = []
    for name, data in members:
        pieces.extend(writer.member(name, len(data), mtime, chunked(data)))
    pieces.extend(writer.finish())
    assert all(type(piece) is bytes and piece for piece in pieces)
    archive = b"".join(pieces)
    assert len(archive) == writer.bytes_written
    return archive


def read_back(fmt: str, archive: bytes) -> dict[str, bytes]:
    """Every member's name and data, in archive order: a zip through its central directory (checking every
    CRC), a tar read as a stream, as a pipe would read it."""
    if fmt == "zip":
        with zipfile.ZipFile(io.BytesIO(archive)) as zip_file:
            assert zip_file.testzip() is None
            return {info.filename: zip_file.read(info) for info in zip_file.infolist()}
    found = {}
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r|") as tar:
        for member in tar:
            data = tar.extractfile(member)
            assert data is not None
            found[member.name] = data.read()
    return found
