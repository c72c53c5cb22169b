"""What each entry of the streaming archive writer records: zip members are stored regular files with
data descriptors and DOS times clamped to what they can hold; tar members are plain files that name no
owner, keep times before 1970 and far ahead, and record sizes past 8 GiB.

No database: the writer is the standard library only.
"""

from __future__ import annotations

import io
import itertools
import tarfile
import zipfile
from collections.abc import Generator
from datetime import UTC, datetime, timedelta, timezone

import pytest

from offboarding.archive import ArchiveWriter
from tests.offboarding.archive_support import WHEN, GiB, MiB, build

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
