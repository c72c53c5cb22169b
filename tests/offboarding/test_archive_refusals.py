"""What the streaming archive writer refuses rather than write a wrong archive: chunks that run past or
short of the member's size, a failing or abandoned chunk source, members out of turn or after the end, a
duplicate or unsafe member name (before writing anything), a negative size; an empty archive is valid.

No database: the writer is the standard library only.
"""

from __future__ import annotations

import itertools
from collections.abc import Generator, Iterator

import pytest

from offboarding.archive import ArchiveError, ArchiveWriter
from tests.offboarding.archive_support import WHEN, KiB, MiB, build, payload, read_back


def collect(pieces: Iterator[bytes], into: list[bytes]) -> None:
    for piece in pieces:
        into.append(piece)


# --- sizes that do not add up -------------------------------------------------------------------------------


def test_it_raises_when_the_chunks_run_past_the_size(fmt: str) -> None:
    first, second = payload(100 * KiB), payload(100 * KiB + 1)
    writer = ArchiveWriter(fmt)
    yielded: list[bytes] = []

    with pytest.raises(ArchiveError, match="runs past its size of 153600 bytes"):
        collect(writer.member("files/x.bin", 150 * KiB, WHEN, [first, second]), yielded)

    assert any(piece is first for piece in yielded)  # what was already written went out first
    assert not any(second in piece for piece in yielded)  # the chunk that overran did not
    assert writer.bytes_written == sum(map(len, yielded))


def test_it_raises_when_the_chunks_end_short(fmt: str) -> None:
    chunk = payload(100 * KiB)
    writer = ArchiveWriter(fmt)
    yielded: list[bytes] = []

    with pytest.raises(ArchiveError, match="ended 1 bytes short of its size of 102401 bytes"):
        collect(writer.member("files/x.bin", 100 * KiB + 1, WHEN, [chunk]), yielded)

    assert any(piece is chunk for piece in yielded)


@pytest.mark.parametrize("chunks", [[b"abc"], [b"a", b"b"], []], ids=["longer", "shorter", "none"])
def test_a_small_member_that_does_not_add_up_breaks_the_archive(fmt: str, chunks: list[bytes]) -> None:
    writer = ArchiveWriter(fmt)
    with pytest.raises(ArchiveError, match=r"files/x\.bin"):
        list(writer.member("files/x.bin", 1 if len(chunks) > 1 else 2, WHEN, chunks))

    with pytest.raises(ArchiveError, match="cannot be completed"):
        writer.finish()
    with pytest.raises(ArchiveError, match="cannot be completed"):
        writer.member("files/y.bin", 0, WHEN, [])


def test_a_failing_chunk_source_breaks_the_archive(fmt: str) -> None:
    def failing() -> Iterator[bytes]:
        yield b"x" * 10
        raise OSError("the blob store went away")

    writer = ArchiveWriter(fmt)
    with pytest.raises(OSError, match="went away"):
        list(writer.member("files/x.bin", 20, WHEN, failing()))

    with pytest.raises(ArchiveError):
        writer.finish()


def test_an_abandoned_member_breaks_the_archive(fmt: str) -> None:
    writer = ArchiveWriter(fmt)
    pieces = writer.member("files/x.bin", 3 * MiB, WHEN, itertools.repeat(bytes(MiB), 3))
    next(pieces)
    assert isinstance(pieces, Generator)  # as Django's StreamingHttpResponse does when the client hangs up
    pieces.close()

    with pytest.raises(ArchiveError):
        writer.finish()


def test_it_refuses_a_member_before_the_previous_one_is_consumed(fmt: str) -> None:
    writer = ArchiveWriter(fmt)
    pieces = writer.member("files/x.bin", 3 * MiB, WHEN, itertools.repeat(bytes(MiB), 3))
    next(pieces)

    with pytest.raises(ValueError, match="Consume the previous member"):
        writer.member("files/y.bin", 0, WHEN, [])
    with pytest.raises(ValueError, match="Consume the previous member"):
        writer.finish()


def test_it_refuses_members_after_the_end(fmt: str) -> None:
    writer = ArchiveWriter(fmt)
    list(writer.finish())

    with pytest.raises(ValueError, match="finished"):
        writer.member("files/x.bin", 0, WHEN, [])


def test_an_empty_archive_is_valid(fmt: str) -> None:
    assert read_back(fmt, build(fmt, [])) == {}


# --- member names the writer refuses ------------------------------------------------------------------------


def test_it_refuses_a_duplicate_member_name_and_carries_on(fmt: str) -> None:
    writer = ArchiveWriter(fmt)
    pieces = list(writer.member("files/a.txt", 1, WHEN, [b"a"]))

    with pytest.raises(ValueError, match="already in the archive"):
        writer.member("files/a.txt", 1, WHEN, [b"b"])

    pieces += writer.finish()
    assert read_back(fmt, b"".join(pieces)) == {"files/a.txt": b"a"}


@pytest.mark.parametrize(
    "name",
    [
        "",
        "/etc/passwd",
        "../escape.txt",
        "files/../../escape.txt",
        "files/./x.txt",
        "files//x.txt",
        "files/",
        "files\\x.txt",
        "C:/Windows/x.txt",
        "files/x\x00.txt",
        "files/x\n.txt",
        "files/\ud800.txt",
        "a" * 70_000,
    ],
)
def test_it_refuses_an_unsafe_member_name_before_writing_anything(fmt: str, name: str) -> None:
    writer = ArchiveWriter(fmt)

    with pytest.raises(ValueError, match="Member name"):
        writer.member(name, 1, WHEN, [b"x"])

    assert writer.bytes_written == 0
    assert read_back(fmt, b"".join(writer.finish())) == {}  # the writer is still usable


def test_it_refuses_a_negative_size(fmt: str) -> None:
    with pytest.raises(ValueError, match="negative"):
        ArchiveWriter(fmt).member("files/x.bin", -1, WHEN, [])
