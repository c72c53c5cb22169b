"""The erasure certificate checked offline, and where people get it: the offline verifier
(``audit.verify_bundle``) passes it with Kodori's public key, it is signed with the key in
``AUDIT_SIGNING_KEY`` and no other key passes it, changing any field fails it; the owners' e-mail and the
admin download are the same bytes, and the erased tenant's chain is readable by support only.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.urls import reverse

from audit import signing
from audit.models import AuditEvent
from offboarding import certificate
from tests.conftest import client_for
from tests.offboarding.erasure_support import Erased, certificate_of, verify, write

pytestmark = pytest.mark.django_db


# --- checking it offline ------------------------------------------------------------------------------------


def test_the_offline_verifier_passes_it_with_kodoris_public_key(
    erased: Erased, signing_key: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(certificate_of(erased.deletion), tmp_path / certificate.filename(erased.deletion))

    assert verify(path, signing_key) == 0

    out = capsys.readouterr().out
    assert "RESULT: PASS" in out and "erasure certificate: tenant Acme Corp" in out
    assert "destroyed: data_keys = 3" in out


def test_it_is_signed_with_the_key_in_settings_and_no_other_key_passes_it(
    erased: Erased, signing_key: str, settings: Any, tmp_path: Path
) -> None:
    signed = certificate_of(erased.deletion)
    assert signed["signature"]["public_key"] == signing_key
    path = write(signed, tmp_path / "certificate.json")
    settings.AUDIT_SIGNING_KEY = ""  # the development key derived from SECRET_KEY
    development_key = signing.public_key_b64()
    _, stranger = signing.generate_private_key()
    assert development_key != signing_key

    assert verify(path, development_key) == 1
    assert verify(path, stranger) == 1
    assert verify(path, stranger, signing_key) == 0


def leaves(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[tuple[Any, ...], Any]]:
    if isinstance(value, dict):
        for name, item in value.items():
            yield from leaves(item, (*path, name))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from leaves(item, (*path, index))
    else:
        yield path, value


def changed(value: Any) -> Any:
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, str):
        return value + "x" if not value.endswith("x") else value[:-1]
    return "x"  # null


def test_changing_any_field_fails_verification(erased: Erased, signing_key: str, tmp_path: Path) -> None:
    signed = certificate_of(erased.deletion)
    fields = [(path, value) for path, value in leaves(signed) if path[0] in ("document", "signature")]
    assert len(fields) > 40  # every field of the document, and the signature's
    passed = []
    for path, value in fields:
        tampered = copy.deepcopy(signed)
        holder = tampered
        for step in path[:-1]:
            holder = holder[step]
        holder[path[-1]] = changed(value)
        if verify(write(tampered, tmp_path / "tampered.json"), signing_key) != 1:
            passed.append(path)
    # Structure too: a field added, a field removed, a line of the coverage dropped.
    for name, change in [
        ("added", lambda d: d["destroyed"].update(backups=0)),
        ("removed", lambda d: d["erasure"].pop("keys_destroyed_at")),
        ("dropped", lambda d: d["coverage"]["not_covered"].pop(0)),
    ]:
        tampered = copy.deepcopy(signed)
        change(tampered["document"])
        if verify(write(tampered, tmp_path / "tampered.json"), signing_key) != 1:
            passed.append((name,))
    assert passed == []
    assert verify(write(signed, tmp_path / "intact.json"), signing_key) == 0  # the file itself was fine


# --- where people get it ------------------------------------------------------------------------------------


def test_the_owners_e_mail_and_the_admin_download_are_the_same_bytes(
    erased: Erased, staff: Any, member: Any
) -> None:
    deletion = erased.deletion
    url = reverse("admin:offboarding_deletionrequest_certificate", args=[deletion.pk])
    (attachment,) = erased.message.attachments
    name, content, mimetype = attachment

    response = client_for(staff).get(url)

    assert response.status_code == 200 and response["Content-Type"] == "application/json"
    assert response.content == content == certificate.as_bytes(certificate_of(deletion))
    assert response["Content-Disposition"] == f'attachment; filename="{name}"'
    assert mimetype == "application/json" and erased.message.to == ["owner@acme.test"]
    assert json.loads(response.content) == certificate_of(deletion)
    assert client_for(member).get(url).status_code == 302  # not staff: the admin's login, not the file


def test_the_erased_tenants_chain_is_readable_by_support_only(erased: Erased, staff: Any, owner: Any) -> None:
    """Kept read-only for support: the admin lists the erased tenant's events; its former owner has no way
    in (no membership is left), and nobody can change an event."""
    tenant = erased.tenant
    url = reverse("admin:audit_auditevent_changelist") + f"?q={tenant.slug}"
    page = client_for(staff).get(url)
    assert page.status_code == 200
    assert "tenant.erased" in page.content.decode() and "tenant.erasure-started" in page.content.decode()
    event = AuditEvent.objects.filter(tenant=tenant).order_by("-seq").first()
    assert event is not None
    change = client_for(staff).post(
        reverse("admin:audit_auditevent_change", args=[event.pk]), {"type": "tenant.sealed"}
    )
    assert change.status_code == 403
    assert AuditEvent.objects.get(pk=event.pk).type == "tenant.erased"
    assert client_for(owner).get(reverse("audit:index")).status_code == 403  # no tenant left for them
    assert client_for(owner).get(url).status_code == 302  # not staff: the admin's login
