"""The member names the streaming archive writer makes safe (``safe_member_name``): one plain name, capped
at 200 bytes keeping the extension, duplicates numbered ignoring case; hostile names extract inside the
folder with Python and with the system's own tools (unzip, bsdtar and tar).

No database: the writer is the standard library only.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
import tarfile
import zipfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from offboarding.archive import ArchiveWriter, archive_format, safe_member_name
from tests.offboarding.archive_support import WHEN, MiB, build, payload

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
        # .ci/run installs every one of them: there a missing tool is a failure, on a laptop a skip.
        if os.environ.get("CI"):
            pytest.fail(f"{tool} is not installed; .ci/run should have installed it")
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
