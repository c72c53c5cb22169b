"""The streaming archive writer (offboarding/archive.py): its formats, and zip and tar round trips
through Python's readers, byte for byte, for every size, thousands of tiny members, Unicode names, and
bytes or memoryview chunks.

No database: the writer is the standard library only.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterator

import pytest

from offboarding.archive import FORMATS, ArchiveWriter, Format, archive_format
from tests.offboarding.archive_support import WHEN, Chunk, MiB, build, payload, read_back

SIZES = [0, 1, 16383, 16384, 16385, 5 * MiB]


# --- formats ------------------------------------------------------------------------------------------------


def test_it_names_the_formats() -> None:
    assert FORMATS == ("zip", "tar")
    assert archive_format("zip") == Format("zip", ".zip", "application/zip")
    assert archive_format("tar") == Format("tar", ".tar", "application/x-tar")


@pytest.mark.parametrize("name", ["rar", "ZIP", "tar.gz", ""])
def test_it_rejects_an_unknown_format(name: str) -> None:
    with pytest.raises(ValueError, match=r"Unknown archive format .*: expected one of zip, tar"):
        archive_format(name)
    with pytest.raises(ValueError, match="Unknown archive format"):
        ArchiveWriter(name)


# --- round trips --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", SIZES)
def test_it_round_trips_a_member_byte_for_byte(fmt: str, size: int) -> None:
    data = payload(size)
    members = [("files/first.bin", data), ("files/second.bin", data[::-1])]

    assert read_back(fmt, build(fmt, members)) == dict(members)


def test_it_round_trips_every_size_in_one_archive(fmt: str) -> None:
    members = [(f"files/{size}.bin", payload(size)) for size in SIZES]

    assert read_back(fmt, build(fmt, members)) == dict(members)


def test_it_round_trips_thousands_of_tiny_members(fmt: str) -> None:
    members = [(f"files/{number}.txt", str(number).encode()) for number in range(3000)]
    writer = ArchiveWriter(fmt)
    pieces: list[bytes] = []
    for name, data in members:
        before = len(pieces)
        pieces.extend(writer.member(name, len(data), WHEN, [data]))
        assert len(pieces) - before == 1  # header, data and descriptor leave as one piece, not three writes
    pieces.extend(writer.finish())

    found = read_back(fmt, b"".join(pieces))

    assert list(found) == [name for name, _ in members]
    assert found == dict(members)


def test_it_keeps_unicode_names(fmt: str) -> None:
    names = [
        "files/résumé.pdf",
        "files/日本語のファイル.txt",
        "files/🎉 party.png",
        "files/تقرير.docx",
        "files/" + "ü" * 150 + ".txt",  # 307 bytes: past ustar's 100-byte name field
        "files/plain.txt",
    ]
    archive = build(fmt, [(name, name.encode()) for name in names])

    assert read_back(fmt, archive) == {name: name.encode() for name in names}
    if fmt == "zip":
        with zipfile.ZipFile(io.BytesIO(archive)) as zip_file:
            utf8 = {info.filename: bool(info.flag_bits & 0x800) for info in zip_file.infolist()}
        assert utf8 == {name: not name.isascii() for name in names}


def test_it_passes_big_bytes_chunks_through_without_copying(fmt: str) -> None:
    chunk = payload(MiB)
    writer = ArchiveWriter(fmt)

    pieces = list(writer.member("files/big.bin", 3 * MiB, WHEN, [chunk, chunk, chunk]))

    assert sum(piece is chunk for piece in pieces) == 3


def test_it_copies_memoryview_chunks_before_the_caller_reuses_them(fmt: str) -> None:
    """A caller that decrypts into one buffer hands in the same memoryview again and again."""
    buffer = bytearray(10)

    def refills() -> Iterator[Chunk]:
        for letter in b"abc":
            buffer[:] = bytes([letter]) * 10
            yield memoryview(buffer)

    writer = ArchiveWriter(fmt)
    pieces = [*writer.member("files/x.txt", 30, WHEN, refills()), *writer.finish()]

    assert read_back(fmt, b"".join(pieces)) == {"files/x.txt": b"a" * 10 + b"b" * 10 + b"c" * 10}
