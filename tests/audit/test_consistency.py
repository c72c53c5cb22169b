"""The offline verifier's consistency check: a new bundle must extend one saved earlier (``--extends``).

As a Certificate Transparency monitor checks that a log's new tree contains the old one, an auditor who kept
an earlier bundle (or only its signed head, ``--save-head``) checks that a later bundle holds that head with
the same hash and every shared event unchanged: a chain cut short, rewritten or forked since is refused, even
when the new bundle verifies on its own (the attacker also deleted the checkpoints Kodori kept).
"""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest
from django.urls import reverse

from audit import signing, verify_bundle
from tenants.models import Tenant

from .conftest import cut_tail, fill

pytestmark = pytest.mark.django_db


def export(client: Any, path: Path, query: str = "") -> Path:
    response = client.get(reverse("audit:export_bundle") + (f"?{query}" if query else ""))
    assert response.status_code == 200
    path.write_bytes(b"".join(response.streaming_content))
    return path


def verify(bundle: Path, *args: str) -> tuple[int, str]:
    """The auditor's run, in process (``python -m audit.verify_bundle``)."""
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        code = verify_bundle.main([str(bundle), "--public-key", signing.public_key_b64(), *args])
    return code, out.getvalue()


@pytest.fixture
def earlier(tmp_path: Path, tenant: Tenant, owner: Any, as_user: Any) -> Path:
    """An export of #1..#10 (its own event is #11), kept by the auditor."""
    fill(tenant, 10, actor=owner)
    return export(as_user(owner), tmp_path / "earlier.zip")


def test_a_later_bundle_that_extends_the_earlier_one_passes(
    earlier: Path, tenant: Tenant, owner: Any, as_user: Any, tmp_path: Path
) -> None:
    fill(tenant, 5, actor=owner)
    later = export(as_user(owner), tmp_path / "later.zip")
    code, out = verify(later, "--extends", str(earlier))
    assert code == 0, out
    assert (
        "consistency: extends the earlier head #10" in out and "10 event(s) in common, all identical" in out
    )


def test_a_saved_head_is_enough(
    earlier: Path, tenant: Tenant, owner: Any, as_user: Any, tmp_path: Path
) -> None:
    head = tmp_path / "head.json"
    code, out = verify(earlier, "--save-head", str(head))
    assert code == 0 and "saved the signed head #10" in out
    saved = json.loads(head.read_text())
    assert (saved["record"], saved["seq"], saved["tenant"]) == ("checkpoint", 10, tenant.pk)
    fill(tenant, 3, actor=owner)
    later = export(as_user(owner), tmp_path / "later.zip")
    code, out = verify(later, "--extends", str(head))
    assert code == 0 and "extends the earlier head #10" in out, out


def test_a_chain_cut_short_with_its_checkpoints_is_refused(
    earlier: Path, tenant: Tenant, owner: Any, as_user: Any, tmp_path: Path
) -> None:
    cut_tail(tenant, 6, checkpoints=True)  # no witness in this test: Kodori alone would not know
    later = export(as_user(owner), tmp_path / "later.zip")
    code, out = verify(later)
    assert code == 0, out  # on its own, the shorter chain verifies
    code, out = verify(later, "--extends", str(earlier))
    assert (
        code == 1 and "does not extend the earlier head #10: it ends at #6" in out and "RESULT: FAIL" in out
    )


def test_a_forked_chain_is_refused(
    earlier: Path, tenant: Tenant, owner: Any, as_user: Any, tmp_path: Path
) -> None:
    cut_tail(tenant, 6, checkpoints=True)
    fill(tenant, 8, actor=owner)  # a new #7.. that the earlier bundle never saw
    later = export(as_user(owner), tmp_path / "later.zip")
    assert verify(later)[0] == 0
    code, out = verify(later, "--extends", str(earlier))
    assert code == 1 and "chain broken at #7: #7 differs from the earlier bundle earlier.zip" in out


def test_a_bundle_that_starts_after_the_earlier_head_cannot_show_it(
    earlier: Path, tenant: Tenant, owner: Any, as_user: Any, tmp_path: Path
) -> None:
    fill(tenant, 5)  # #12..#16, by the system
    later = export(as_user(owner), tmp_path / "later.zip", "actor=system")
    header = verify_bundle.read_bundle(later).header
    assert header["first_seq"] > 11
    code, out = verify(later, "--extends", str(earlier))
    assert code == 1 and "cannot show that this bundle extends the earlier head #10" in out


def test_a_bundle_starting_right_after_the_earlier_head_links_to_it(earlier: Path) -> None:
    old = verify_bundle.read_bundle(earlier)
    head = verify_bundle.read_head(earlier)
    rest = verify_bundle.Bundle(dict(old.header, first_seq=5), old.events[4:], old.checkpoints)
    report = verify_bundle.Report()
    verify_bundle.check_extends(
        rest, verify_bundle.Head(head.tenant, 4, old.events[3]["hash"], None, {}, "x"), {}, report
    )
    assert report.failure is None
    forged = verify_bundle.Head(head.tenant, 4, "0" * 64, None, {}, "x")
    report = verify_bundle.Report()
    verify_bundle.check_extends(rest, forged, {}, report)
    assert report.failure is not None and "#4 differs" in report.failure


def test_another_tenants_head_and_a_forged_head_are_refused(
    earlier: Path, other_tenant: Tenant, outsider: Any, as_user: Any, tmp_path: Path
) -> None:
    fill(other_tenant, 3)
    theirs = export(as_user(outsider), tmp_path / "theirs.zip")
    code, out = verify(earlier, "--extends", str(theirs))
    assert code == 1 and f"is of tenant {other_tenant.pk}" in out
    head = tmp_path / "head.json"
    verify(earlier, "--save-head", str(head))
    saved = json.loads(head.read_text())
    saved["signature"] = saved["signature"][::-1]
    head.write_text(json.dumps(saved))
    code, out = verify(earlier, "--extends", str(head))
    assert code == 1 and "is not signed by a trusted key" in out


def test_an_unreadable_earlier_head_exits_2(earlier: Path, tmp_path: Path) -> None:
    junk = tmp_path / "junk.json"
    junk.write_text("[1, 2]")
    assert verify(earlier, "--extends", str(junk))[0] == 2


def test_the_shipped_script_checks_consistency(
    earlier: Path, tenant: Tenant, owner: Any, as_user: Any, tmp_path: Path
) -> None:
    fill(tenant, 2, actor=owner)
    later = export(as_user(owner), tmp_path / "later.zip")
    script = tmp_path / "verify_audit_bundle.py"
    with zipfile.ZipFile(later) as archive:
        script.write_bytes(archive.read("verify_audit_bundle.py"))
        assert b"--extends" in archive.read("README.txt")
    result = subprocess.run(
        [sys.executable, "-I", str(script), str(later), "--public-key", signing.public_key_b64(), "--extends",
         str(earlier), "--require-signatures"],
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0 and "consistency: extends the earlier head #10" in result.stdout, (
        result.stdout
    )
