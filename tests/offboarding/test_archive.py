"""The streaming archive writer (offboarding/archive.py): zip and tar round trips through Python's readers and
the system's tools, exact sizes, constant memory, zip64, and the member names it makes safe to extract.

No database: the writer is the standard library only.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tarfile
import time
import zipfile
import zlib
from collections.abc import Generator, Iterable, Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from offboarding.archive import (
    FORMATS,
    ArchiveError,
    ArchiveWriter,
    Format,
    archive_format,
    safe_member_name,
)

KiB = 1 << 10
MiB = 1 << 20
GiB = 1 << 30
WHEN = datetime(2024, 5, 6, 7, 8, 10, tzinfo=UTC)
REPO = Path(__file__).resolve().parents[2]
SIZES = [0, 1, 16383, 16384, 16385, 5 * MiB]

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


def collect(pieces: Iterator[bytes], into: list[bytes]) -> None:
    for piece in pieces:
        into.append(piece)


@pytest.fixture(params=FORMATS)
def fmt(request: pytest.FixtureRequest) -> str:
    return str(request.param)


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


# --- what each entry records --------------------------------------------------------------------------------


def test_zip_members_are_stored_regular_files_with_data_descriptors() -> None:
    in_paris = WHEN.astimezone(timezone(timedelta(hours=2)))
    archive = build("zip", [("files/a.txt", b"hello" * 1000)], mtime=in_paris)

    with zipfile.ZipFile(io.BytesIO(archive)) as zip_file:
        (info,) = zip_file.infolist()
    assert info.compress_type == zipfile.ZIP_STORED
    assert info.compress_size == info.file_size == 5000
    assert info.flag_bits & 0x08  # sizes and CRC follow the data: the output was never seeked
    assert info.create_system == 3
    assert info.external_attr >> 16 == 0o100644
    assert info.date_time == (2024, 5, 6, 7, 8, 10)  # UTC, whatever the zone it was given in
    # Info-ZIP's extended timestamp: tag 0x5455, 5 bytes, flags "mtime", the exact UTC seconds.
    assert info.extra == b"UT\x05\x00\x01" + int(WHEN.timestamp()).to_bytes(4, "little")


@pytest.mark.parametrize(
    ("mtime", "dos_time"),
    [
        (datetime(1970, 1, 1, tzinfo=UTC), (1980, 1, 1, 0, 0, 0)),
        (datetime(1601, 1, 1, tzinfo=UTC), (1980, 1, 1, 0, 0, 0)),
        (datetime(2200, 6, 1, tzinfo=UTC), (2107, 12, 31, 23, 59, 58)),
        (datetime(2024, 5, 6, 7, 8, 11), (2024, 5, 6, 7, 8, 10)),  # naive is UTC; DOS time has 2-second steps
    ],
)
def test_zip_clamps_times_to_what_dos_time_can_hold(mtime: datetime, dos_time: tuple[int, ...]) -> None:
    with zipfile.ZipFile(io.BytesIO(build("zip", [("files/a.txt", b"a")], mtime=mtime))) as zip_file:
        assert zip_file.infolist()[0].date_time == dos_time


def test_tar_members_are_plain_files_that_name_no_owner() -> None:
    archive = build("tar", [("files/a.txt", b"hello")])

    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        (member,) = tar.getmembers()
    assert member.isreg()
    assert member.mode == 0o644
    assert (member.uid, member.gid, member.uname, member.gname) == (0, 0, "", "")
    assert member.mtime == WHEN.timestamp()
    assert len(archive) % tarfile.RECORDSIZE == 0


def test_tar_keeps_times_before_1970_and_far_ahead() -> None:
    for mtime in (datetime(1960, 2, 3, 4, 5, 6, tzinfo=UTC), datetime(2400, 1, 1, tzinfo=UTC)):
        with tarfile.open(fileobj=io.BytesIO(build("tar", [("files/a.txt", b"a")], mtime=mtime))) as tar:
            assert tar.getmembers()[0].mtime == mtime.timestamp()


def test_tar_records_sizes_past_8_gib() -> None:
    """ustar's size field stops at 8 GiB; PAX carries the rest. Only the header is read: no 9 GiB of data."""
    size = 9 * GiB
    writer = ArchiveWriter("tar")
    pieces = writer.member("files/huge.bin", size, WHEN, itertools.repeat(bytes(MiB), size // MiB))

    header = next(pieces)
    assert isinstance(pieces, Generator)
    pieces.close()

    with tarfile.open(fileobj=io.BytesIO(header), mode="r|") as tar:
        member = tar.next()
        assert member is not None
        assert (member.name, member.size) == ("files/huge.bin", size)


# --- names made safe ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "safe"),
    [
        ("report.pdf", "report.pdf"),
        ("../../etc/passwd", "passwd"),
        ("/abs", "abs"),
        ("a\\b", "b"),
        ("C:\\Users\\me\\notes.txt", "notes.txt"),
        ("folder/", "folder"),
        ("evil\x00na\nme.txt", "evilname.txt"),
        ("tab\there\r.txt", "tabhere.txt"),
        ("", "unnamed"),
        ("...", "unnamed"),
        ("/", "unnamed"),
        (".hidden", "hidden"),
        ("  . spaced out .  ", "spaced out"),
        ("trailing dot.", "trailing dot"),
        ("CON.txt", "_CON.txt"),
        ("lpt1", "_lpt1"),
        ("console.txt", "console.txt"),
        ('what? "really" <yes>|*:.txt', "what_ _really_ _yes____.txt"),
        ("invoice\u202efdp.exe", "invoicefdp.exe"),
        ("line\u2028break.txt", "linebreak.txt"),
        ("\ud800lone surrogate.txt", "lone surrogate.txt"),
        ("cafe\u0301.txt", "caf\u00e9.txt"),  # NFD, as macOS sends it, becomes NFC
    ],
)
def test_safe_member_name_makes_one_plain_name(name: str, safe: str) -> None:
    assert safe_member_name(name, set()) == safe


def test_safe_member_name_caps_long_names_at_200_bytes_keeping_the_extension() -> None:
    taken: set[str] = set()
    ascii_name = safe_member_name("a" * 300 + ".pdf", taken)
    accented = safe_member_name("é" * 150 + ".pdf", taken)  # 2-byte characters: never cut in half
    again = safe_member_name("é" * 150 + ".pdf", taken)
    no_extension = safe_member_name("x" * 300, taken)
    long_extension = safe_member_name("name." + "y" * 300, taken)

    assert ascii_name == "a" * 196 + ".pdf"
    assert accented == "é" * 98 + ".pdf"
    assert again == "é" * 96 + " (2).pdf"
    assert no_extension == "x" * 200
    assert long_extension == "name." + "y" * 195  # a 300-byte "extension" is not one
    assert all(len(name.encode()) == 200 for name in (ascii_name, no_extension, long_extension))
    assert len(accented.encode()) == 200 and len(again.encode()) == 200


def test_safe_member_name_numbers_duplicates_ignoring_case() -> None:
    taken: set[str] = set()
    names = [safe_member_name(name, taken) for name in ["Report.PDF", "report.pdf", "REPORT.pdf", "report"]]

    assert names == ["Report.PDF", "report (2).pdf", "REPORT (3).pdf", "report"]
    assert taken == {"report.pdf", "report (2).pdf", "report (3).pdf", "report"}


def test_safe_member_name_skips_numbers_already_taken() -> None:
    """Users upload "scan (4).pdf" themselves: the number chosen is a free one, not necessarily the lowest."""
    taken = {"scan.pdf", "scan (2).pdf", "scan (4).pdf", "scan (8).pdf"}
    before = set(taken)

    chosen = safe_member_name("scan.pdf", taken)

    assert re.fullmatch(r"scan \((\d+)\)\.pdf", chosen)
    assert chosen not in before
    assert taken == {*before, chosen}


def test_safe_member_name_numbers_thousands_of_duplicates_in_order() -> None:
    taken: set[str] = set()

    names = [safe_member_name("scan.pdf", taken) for _ in range(3000)]

    assert names == ["scan.pdf", *(f"scan ({number}).pdf" for number in range(2, 3001))]


@settings(max_examples=300, deadline=None)
@given(names=st.lists(st.text(max_size=300), min_size=1, max_size=20))
def test_safe_member_names_are_always_single_unique_writable_names(names: list[str]) -> None:
    taken: set[str] = set()
    results = [safe_member_name(name, taken) for name in names]

    assert len({result.lower() for result in results}) == len(results)
    assert taken == {result.lower() for result in results}
    writer = ArchiveWriter("tar")
    for result in results:
        assert 0 < len(result.encode("utf-8")) <= 200
        assert "/" not in result and "\\" not in result
        assert result[0] not in ". " and result[-1] not in ". "
        list(writer.member("files/" + result, 0, WHEN, []))  # the writer accepts every one of them


HOSTILE = ["../../etc/passwd", "/abs", "a\\b", "nul\x00byte", "new\nline", "", ".hidden", "x" * 300, ".."]


def hostile_members() -> list[tuple[str, bytes]]:
    taken: set[str] = set()
    members = [("files/" + safe_member_name(name, taken), name.encode()) for name in HOSTILE]
    members += [("files/" + safe_member_name("Résumé 日本.txt", taken), payload(16385))]
    members += [("files/" + safe_member_name("résumé 日本.TXT", taken), b"")]
    return members


def test_hostile_names_extract_inside_the_folder_with_python(fmt: str, tmp_path: Path) -> None:
    members = hostile_members()
    archive = build(fmt, members)

    if fmt == "zip":
        with zipfile.ZipFile(io.BytesIO(archive)) as zip_file:
            zip_file.extractall(tmp_path)  # noqa: S202 -- what is under test
    else:
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            tar.extractall(tmp_path, filter="data")  # the strict filter: it refuses any path that escapes

    assert extracted(tmp_path) == dict(members)


def extracted(root: Path) -> dict[str, bytes]:
    return {
        path.relative_to(root).as_posix(): path.read_bytes() for path in root.rglob("*") if path.is_file()
    }


# --- the system's tools -------------------------------------------------------------------------------------

TOOLS = {
    "unzip": (["unzip", "-t", "{archive}"], ["unzip", "-q", "{archive}", "-d", "{target}"]),
    "bsdtar": (["bsdtar", "-tf", "{archive}"], ["bsdtar", "-xf", "{archive}", "-C", "{target}"]),
    "tar": (["tar", "-tf", "{archive}"], ["tar", "-xf", "{archive}", "-C", "{target}"]),
}


@pytest.mark.parametrize(
    ("tool", "archive_fmt"), [("unzip", "zip"), ("bsdtar", "zip"), ("bsdtar", "tar"), ("tar", "tar")]
)
def test_system_tools_accept_and_extract_the_archive(tool: str, archive_fmt: str, tmp_path: Path) -> None:
    if shutil.which(tool) is None:
        pytest.skip(f"{tool} is not installed")
    members = [*hostile_members(), ("files/big.bin", payload(5 * MiB + 3))]
    path = tmp_path / f"export{archive_format(archive_fmt).extension}"
    path.write_bytes(build(archive_fmt, members))
    target = tmp_path / "out"
    target.mkdir()
    check, extract = (
        [part.format(archive=path, target=target) for part in command] for command in TOOLS[tool]
    )
    env = {**os.environ, "LC_ALL": "C.UTF-8"}

    listing = subprocess.run(check, capture_output=True, text=True, env=env, check=True)
    subprocess.run(extract, capture_output=True, env=env, check=True)

    if tool == "unzip":
        assert "No errors detected" in listing.stdout
    else:
        assert listing.stdout.splitlines() == [name for name, _ in members]
    assert extracted(target) == dict(members)
    # The exact UTC mtime survives: PAX in a tar, the extended timestamp field in a zip.
    assert {path.stat().st_mtime for path in target.rglob("*") if path.is_file()} == {WHEN.timestamp()}


# --- cost ---------------------------------------------------------------------------------------------------


def test_it_reports_its_throughput(capsys: pytest.CaptureFixture[str]) -> None:
    """Prints MiB/s for 256 MiB of zeros in 1 MiB chunks; asserts no timing (machines differ)."""
    count, chunk = 256, bytes(MiB)
    view = memoryview(bytearray(MiB))

    def measure(work: Iterable[object]) -> tuple[float, float]:
        wall, cpu = time.perf_counter(), time.process_time()
        for _ in work:
            pass
        return count / (time.perf_counter() - wall), count / (time.process_time() - cpu)

    def hashed() -> Iterator[None]:
        sha = hashlib.sha256()
        for _ in range(count):
            sha.update(chunk)
            yield None

    def archived(fmt: str, source: Chunk) -> Iterator[bytes]:
        writer = ArchiveWriter(fmt)
        yield from writer.member("files/zeros.bin", count * MiB, WHEN, itertools.repeat(source, count))
        yield from writer.finish()

    figures = {"sha256": measure(hashed())}
    for fmt in FORMATS:
        figures[f"{fmt}, bytes chunks"] = measure(archived(fmt, chunk))
        figures[f"{fmt}, memoryview chunks (copied)"] = measure(archived(fmt, view))
    with capsys.disabled():
        print("\narchive throughput, 256 MiB of zeros in 1 MiB chunks (wall MiB/s, CPU MiB/s):")
        for label, (wall, cpu) in figures.items():
            print(f"  {label:34} {wall:9.0f} {cpu:9.0f}")


MEMORY_PROBE = """
import itertools, json, resource, sys
from datetime import UTC, datetime
from offboarding.archive import ArchiveWriter

MiB = 1 << 20
view = memoryview(bytearray(MiB))
fmt = sys.argv[1]

def drain(writer, size):
    total = 0
    for piece in writer.member("files/big.bin", size, datetime.now(UTC), itertools.repeat(view, size // MiB)):
        total += len(piece)
    for piece in writer.finish():
        total += len(piece)
    assert total == writer.bytes_written
    return total

drain(ArchiveWriter(fmt), 8 * MiB)  # warm up: imports, first allocations
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
total = drain(ArchiveWriter(fmt), 1024 * MiB)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"before_kib": before, "after_kib": after, "total": total}))
"""


@pytest.mark.slow
def test_memory_stays_constant_for_a_1_gib_member(fmt: str) -> None:
    """In a fresh process, so that an earlier test's peak cannot hide this one's."""
    result = subprocess.run(
        [sys.executable, "-c", MEMORY_PROBE, fmt], cwd=REPO, capture_output=True, text=True, check=True
    )
    figures = json.loads(result.stdout)

    assert figures["total"] > GiB
    assert figures["after_kib"] - figures["before_kib"] < 50 * 1024


@pytest.mark.slow
def test_zip_switches_to_zip64_for_a_member_past_4_gib(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """4 GiB + 1 MiB of zeros, written as a sparse file: each zero chunk comes back as the very object handed
    in, and a hole reads back as the zeros it stands for, so the file is the archive without 4 GiB of disk."""
    size, zero = 4 * GiB + MiB, bytes(MiB)
    writer = ArchiveWriter("zip")
    path = tmp_path / "big.zip"
    started = time.perf_counter()
    with path.open("wb") as out:
        for piece in itertools.chain(
            writer.member("files/big.bin", size, WHEN, itertools.repeat(zero, size // MiB)),
            writer.member("files/after.txt", 5, WHEN, [b"after"]),
            writer.finish(),
        ):
            if piece is zero:
                out.seek(len(piece), os.SEEK_CUR)
            else:
                out.write(piece)
        out.truncate()
    written = time.perf_counter() - started
    crc = 0
    for _ in range(size // MiB):
        crc = zlib.crc32(zero, crc)

    assert path.stat().st_size == writer.bytes_written > size
    with zipfile.ZipFile(path) as zip_file:
        big, after = zip_file.getinfo("files/big.bin"), zip_file.getinfo("files/after.txt")
        assert (big.file_size, big.compress_size, big.CRC) == (size, size, crc)
        assert after.header_offset > 4 * GiB  # the central directory needed a zip64 offset too
        assert zip_file.read(after) == b"after"
        with zip_file.open(big) as member:  # its local header, with the zip64 extra field, parses
            assert member.read(MiB) == zero
    with capsys.disabled():
        print(f"\nzip64: wrote a {size / GiB:.3f} GiB member in {written:.1f} s")
