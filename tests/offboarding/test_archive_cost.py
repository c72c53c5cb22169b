"""What the streaming archive writer costs: its throughput (printed, not asserted), constant memory for a
1 GiB member, and zip64 for a member past 4 GiB.

No database: the writer is the standard library only.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import subprocess
import sys
import time
import zipfile
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest

from offboarding.archive import FORMATS, ArchiveWriter
from tests.offboarding.archive_support import WHEN, Chunk, GiB, MiB

REPO = Path(__file__).resolve().parents[2]


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
