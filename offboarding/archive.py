"""Zip and tar archives of members whose sizes are known in advance, written as a stream of bytes.

Used for a tenant's export and for downloading several files as one archive. Standard library only: no Django.

The writer never holds a member's data and never seeks its output: each chunk the caller hands in goes out in
the next piece yielded (a ``bytes`` chunk as the very same object, a ``memoryview`` copied once, because the
caller may reuse its buffer), so memory stays constant whatever the members' sizes. What grows with their
number is small: the writer remembers the names it wrote, to refuse a duplicate (about 190 bytes a member
measured), and a zip's central directory, written at the end, needs each member's name, CRC-32, size and
offset, which zipfile keeps until then (about 660 bytes a member in all).

zip
    Written by ``zipfile`` into an unseekable sink, so each member is a local header without CRC or sizes, the
    data, then a data descriptor carrying them (general purpose flag bit 3). Members are STORED: users' files
    are often compressed already, and storing costs no CPU but the CRC-32. Names are UTF-8 (flag bit 11 for
    any name that is not ASCII). zipfile switches a member to zip64 (local header extra field, 64-bit
    descriptor) from about 2 GiB, and the central directory to zip64 past 4 GiB of offsets or 65,535 members.
    The DOS time (no time zone, two-second steps, 1980 to 2107) holds the UTC mtime clamped to that range; an
    Info-ZIP "extended timestamp" extra field (0x5455) adds the exact UTC time for 1970 to 2038. Each entry is
    a regular file, mode 0644, made on "Unix".

    Readers that use the central directory (Python's zipfile, Info-ZIP's unzip and libarchive's bsdtar are
    checked in the tests) read these archives.
    Readers that only walk local headers cannot find where a STORED member ends when its sizes follow the data
    (Java's ``ZipInputStream`` refuses such entries): the tar format is the one to offer them.

tar
    POSIX.1-2001 (PAX): ``tarfile`` builds each header (``TarInfo.tobuf``), with PAX records for names that
    are long or not ASCII and for sizes of 8 GiB and more. Entries are regular files, mode 0644, uid/gid 0 and
    empty user and group names, so no detail of the server leaks. The data follows the header, padded to 512
    bytes; two zero blocks end the archive, padded to a 10 KiB record as tarfile and GNU tar do.

    ``TarFile.addfile`` is not used for the data: it reads a member to its end before it returns, so a
    generator around it could only yield once the whole member had piled up, and its stream mode (``"w|"``)
    re-slices a growing ``bytes`` buffer on every write (about 0.5 GB/s with 1 MiB writes here).
"""

from __future__ import annotations

import enum
import math
import re
import stat
import struct
import tarfile
import unicodedata
import zipfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

FORMATS = ("zip", "tar")


class ArchiveError(Exception):
    """The archive cannot be completed: a member's data did not add up to its size, or its chunks failed.

    What the writer yielded before is not a valid archive, and the writer refuses to go on."""


@dataclass(frozen=True)
class Format:
    """An archive format as the HTTP response announces it."""

    name: str
    extension: str
    content_type: str


_FORMATS = {
    "zip": Format("zip", ".zip", "application/zip"),
    "tar": Format("tar", ".tar", "application/x-tar"),
}


def archive_format(name: str) -> Format:
    try:
        return _FORMATS[name]
    except KeyError:
        raise ValueError(f"Unknown archive format {name!r}: expected one of {', '.join(FORMATS)}") from None


# Pieces at least this big are yielded as they are; smaller ones are gathered up to this size and joined, so
# a thousand tiny members do not become thousands of tiny writes to the socket.
_PIECE = 64 * 1024

_FILE_MODE = 0o644
_DOS_FIRST = datetime(1980, 1, 1, tzinfo=UTC)
_DOS_LAST = datetime(2107, 12, 31, 23, 59, 58, tzinfo=UTC)
_EXTENDED_TIMESTAMP = 0x5455  # Info-ZIP's "UT" extra field: flags (bit 0: mtime follows), 32-bit UTC seconds
_ZIP_NAME_BYTES = 0xFFFF


class _Sink:
    """Where zipfile and the tar writer put the archive's bytes until the writer yields them.

    It has neither ``seek`` nor ``tell``: zipfile then counts the offsets itself and writes data descriptors
    instead of seeking back to fill in the local headers."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []
        self.pending = 0

    def write(self, data: bytes | bytearray | memoryview) -> int:
        # A bytes chunk goes through untouched; anything else is copied now, as the caller may refill its
        # buffer for the next chunk before this one has been yielded.
        part = data if type(data) is bytes else bytes(data)
        self._parts.append(part)
        self.pending += len(part)
        return len(part)

    def flush(self) -> None:
        return None

    def close(self) -> None:
        return None

    def drain(self) -> Iterator[bytes]:
        parts, self._parts, self.pending = self._parts, [], 0
        small: list[bytes] = []
        for part in parts:
            if len(part) >= _PIECE:
                if small:
                    yield b"".join(small)
                    small = []
                yield part
            elif part:
                small.append(part)
        if small:
            yield b"".join(small)


class _State(enum.Enum):
    READY = "ready"
    WRITING = "writing"
    BROKEN = "broken"
    FINISHED = "finished"


class ArchiveWriter:
    """Writes one archive: ``member()`` for each member in turn, then ``finish()``, consuming each iterator
    before calling the next. ``bytes_written`` counts the bytes yielded so far.

    Member names are paths inside the archive ("files/report.pdf"): relative, "/"-separated, without empty,
    "." or ".." parts, backslashes or control characters, and unique; anything else is a ValueError before a
    byte is written. ``safe_member_name`` turns a user's file name into a name that passes.
    """

    def __init__(self, fmt: str) -> None:
        self.format = archive_format(fmt)
        self.bytes_written = 0
        self._sink = _Sink()
        self._state = _State.READY
        self._names: set[str] = set()
        self._zip = (
            zipfile.ZipFile(self._sink, "w", compression=zipfile.ZIP_STORED, allowZip64=True)
            if self.format.name == "zip"
            else None
        )

    def member(
        self, name: str, size: int, mtime: datetime, chunks: Iterable[bytes | memoryview]
    ) -> Iterator[bytes]:
        """The archive's bytes for one member: header, data (``chunks``, exactly ``size`` bytes) and, in a
        zip, the data descriptor. Raises ArchiveError once the chunks run past ``size`` or end short of it."""
        _check_member_name(name)
        if size < 0:
            raise ValueError(f"Member {name!r}: size {size} is negative")
        self._check_ready()
        if name in self._names:
            raise ValueError(f"Member {name!r} is already in the archive")
        data = _exactly(name, size, chunks)
        when = _utc(mtime)
        if self._zip is not None:
            return self._write(name, self._zip_member(self._zip, name, size, when, data))
        return self._write(name, self._tar_member(name, size, when, data))

    def finish(self) -> Iterator[bytes]:
        """The end of the archive: a zip's central directory, a tar's end-of-archive blocks."""
        self._check_ready()
        return self._finish()

    def _check_ready(self) -> None:
        if self._state is _State.BROKEN:
            raise ArchiveError("An earlier member failed: this archive cannot be completed")
        if self._state is _State.WRITING:
            raise ValueError("Consume the previous member's bytes before starting the next member")
        if self._state is _State.FINISHED:
            raise ValueError("The archive is finished")

    def _emit(self) -> Iterator[bytes]:
        for piece in self._sink.drain():
            self.bytes_written += len(piece)
            yield piece

    def _write(self, name: str, steps: Iterator[None]) -> Iterator[bytes]:
        """Runs a member's steps, yielding what they wrote whenever a piece is ready and at the end. Any
        failure, or the consumer abandoning the member half-way, breaks the archive for good."""
        self._check_ready()
        if name in self._names:
            raise ValueError(f"Member {name!r} is already in the archive")
        self._names.add(name)
        self._state = _State.WRITING
        try:
            for _ in steps:
                if self._sink.pending >= _PIECE:
                    yield from self._emit()
            yield from self._emit()
        except BaseException:
            self._state = _State.BROKEN
            raise
        self._state = _State.READY

    def _zip_member(
        self,
        archive: zipfile.ZipFile,
        name: str,
        size: int,
        mtime: datetime,
        data: Iterator[bytes | memoryview],
    ) -> Iterator[None]:
        info = zipfile.ZipInfo(name, date_time=_dos_time(mtime))
        info.compress_type = zipfile.ZIP_STORED
        info.file_size = size  # read by zipfile.open to decide on zip64 before the data is written
        info.create_system = 3  # Unix, so that extractors apply the mode in external_attr
        info.external_attr = (stat.S_IFREG | _FILE_MODE) << 16
        info.extra = _extended_timestamp(mtime)
        out = archive.open(info, "w")
        for chunk in data:
            out.write(chunk)
            yield
        out.close()  # writes the data descriptor
        yield

    def _tar_member(
        self, name: str, size: int, mtime: datetime, data: Iterator[bytes | memoryview]
    ) -> Iterator[None]:
        info = tarfile.TarInfo(name)
        info.type = tarfile.REGTYPE
        info.size = size
        info.mtime = math.floor(mtime.timestamp())
        info.mode = _FILE_MODE
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        self._sink.write(info.tobuf(tarfile.PAX_FORMAT, "utf-8", "strict"))
        for chunk in data:
            self._sink.write(chunk)
            yield
        padding = -size % tarfile.BLOCKSIZE
        if padding:
            self._sink.write(bytes(padding))
        yield

    def _finish(self) -> Iterator[bytes]:
        self._check_ready()
        self._state = _State.FINISHED
        if self._zip is not None:
            self._zip.close()
        else:
            self._sink.write(bytes(2 * tarfile.BLOCKSIZE))
            end = self.bytes_written + self._sink.pending
            self._sink.write(bytes(-end % tarfile.RECORDSIZE))
        yield from self._emit()


def _exactly(name: str, size: int, chunks: Iterable[bytes | memoryview]) -> Iterator[bytes | memoryview]:
    """The caller's chunks, checked to add up to ``size``: a chunk that would run past it is not passed on."""
    left = size
    for chunk in chunks:
        length = len(chunk) if type(chunk) is bytes else memoryview(chunk).nbytes
        if length > left:
            raise ArchiveError(f"Member {name!r}: the data runs past its size of {size} bytes")
        left -= length
        if length:
            yield chunk
    if left:
        raise ArchiveError(f"Member {name!r}: the data ended {left} bytes short of its size of {size} bytes")


_DRIVE = re.compile(r"[A-Za-z]:")


def _check_member_name(name: str) -> None:
    try:
        encoded = name.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"Member name {name!r} cannot be written as UTF-8") from None
    problem = None
    if not name:
        problem = "is empty"
    elif len(encoded) > _ZIP_NAME_BYTES:
        problem = "is too long"
    elif "\\" in name:
        problem = "contains a backslash"
    elif any(unicodedata.category(char) == "Cc" for char in name):
        problem = "contains a control character"
    elif name.startswith("/") or _DRIVE.match(name):
        problem = "is absolute"
    elif any(part in ("", ".", "..") for part in name.split("/")):
        problem = "has an empty, '.' or '..' part"
    if problem:
        raise ValueError(f"Member name {name!r} {problem}")


def _utc(moment: datetime) -> datetime:
    """A naive datetime is taken to be UTC."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _dos_time(moment: datetime) -> tuple[int, int, int, int, int, int]:
    # zipfile refuses years before 1980, and a year past 2107 overflows the 7-bit field.
    moment = min(max(moment, _DOS_FIRST), _DOS_LAST)
    return (moment.year, moment.month, moment.day, moment.hour, moment.minute, moment.second)


def _extended_timestamp(moment: datetime) -> bytes:
    seconds = math.floor(moment.timestamp())
    if not 0 <= seconds < 2**31:  # readers disagree on the sign of the field outside this range
        return b""
    return struct.pack("<HHBI", _EXTENDED_TIMESTAMP, 5, 1, seconds)


# --- names --------------------------------------------------------------------------------------------------

_NAME_BYTES = 200
_EXTENSION_BYTES = 16  # a longer "extension" is just part of the name
_UNNAMED = "unnamed"
_SEPARATOR = re.compile(r"[/\\]")
_EDGES = re.compile(r"^[\s.]+|[\s.]+$")
# Characters Windows refuses in a file name; extractors there fail or rename on their own.
_WINDOWS_FORBIDDEN = str.maketrans(dict.fromkeys('<>:"|?*', "_"))
_WINDOWS_DEVICES = frozenset(
    ["con", "prn", "aux", "nul", "conin$", "conout$"]
    + [f"{port}{n}" for port in ("com", "lpt") for n in range(1, 10)]
)
# Bidirectional controls let "invoice\u202efdp.exe" display as "invoiceexe.pdf".
_BIDI_CONTROLS = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def _is_invisible(char: str) -> bool:
    # Cc: C0/C1 controls (NUL, newline, ...); Cs: lone surrogates (no UTF-8 form); Zl/Zp: line separators.
    return unicodedata.category(char) in ("Cc", "Cs", "Zl", "Zp") or char in _BIDI_CONTROLS


def safe_member_name(name: str, taken: set[str]) -> str:
    """A name for a user's file that is safe to extract anywhere and unique among ``taken``.

    A file name is one name, not a path: only its last part counts, whether "/" or "\\" separates the parts.
    Control and bidirectional characters go; characters Windows refuses become "_"; leading and trailing dots
    and spaces go, so that nothing is hidden or relative; Windows device names get a "_" in front; an empty
    result is "unnamed". The result is NFC, at most 200 UTF-8 bytes with its extension kept, and differs from
    every name in ``taken`` ignoring case, by " (2)", " (3)" ... before the extension. It is added to
    ``taken`` lower-cased. The caller adds the folder ("files/").
    """
    text = unicodedata.normalize("NFC", "".join(char for char in name if not _is_invisible(char)))
    parts = (_EDGES.sub("", part.translate(_WINDOWS_FORBIDDEN)) for part in _SEPARATOR.split(text))
    base = next((part for part in reversed(list(parts)) if part), _UNNAMED)
    if base.split(".", 1)[0].rstrip().lower() in _WINDOWS_DEVICES:
        base = "_" + base
    stem, extension = _split_extension(base)

    def candidate(number: int) -> str:
        return _fit(stem, f" ({number})" if number > 1 else "", extension)

    chosen = candidate(1)
    if chosen.lower() in taken:
        chosen = candidate(_free_number(lambda number: candidate(number).lower() not in taken))
    taken.add(chosen.lower())
    return chosen


def _split_extension(base: str) -> tuple[str, str]:
    stem, dot, extension = base.rpartition(".")
    if not dot or not stem or len(extension.encode()) > _EXTENSION_BYTES or extension != extension.strip():
        return base, ""
    return stem, "." + extension


def _fit(stem: str, suffix: str, extension: str) -> str:
    """``stem + suffix + extension`` within the byte limit, shortening the stem only (never mid-character)."""
    room = _NAME_BYTES - len(suffix.encode()) - len(extension.encode())
    encoded = stem.encode()
    if len(encoded) > room:
        stem = _EDGES.sub("", encoded[:room].decode("utf-8", "ignore")) or "_"
    return stem + suffix + extension


def _free_number(is_free: Callable[[int], bool]) -> int:
    """A number from 2 up for which ``is_free`` holds, found in O(log n) tries when 2..n are all taken (the
    usual case: the same name again and again), where counting up would make n duplicates cost n² tries."""
    taken, free = 1, 2  # 1 stands for the plain name, which is taken
    while not is_free(free):
        taken, free = free, free * 2
    while free - taken > 1:  # between a taken number and a free one there is a boundary: find it
        middle = (taken + free) // 2
        if is_free(middle):
            free = middle
        else:
            taken = middle
    return free
