"""Signed documents (erasure certificates, audit purge records): signed by ``audit.signing``, checked
offline by ``verify_audit_bundle.py`` with the standard library and ``cryptography`` only."""

from __future__ import annotations

import base64
import copy
import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from audit import signing, verify_bundle

REPO = Path(__file__).resolve().parents[2]
CERTIFICATE_KIND = "kodori-erasure-certificate"
PURGE_KIND = "kodori-audit-purge-record"

# What the offboarding feature signs: nested objects, lists, Unicode, ints, null, booleans, an empty list and
# an empty object (so that adding to them is tried too).
CERTIFICATE: dict[str, Any] = {
    "certificate_id": "c0ffee00-1234-4abc-8def-0123456789ab",
    "tenant": {"id": 42, "slug": "zoe-backerei", "name": "Zoë's Bäckerei 株式会社 🥐"},
    "erasure": {
        "scheduled_at": "2026-04-01T09:30:00.000000Z",
        "started_at": "2026-05-01T09:30:00.000000Z",
        "completed_at": "2026-05-01T09:31:07.250000Z",
        "requested_by": {"id": 7, "name": "Zoë Owner", "email": "zoë@acme.test"},
        "cancelled": False,
        "reason": None,
    },
    "destroyed": {
        "blobs": 1234,
        "blob_bytes": 98765432100,
        "data_keys": 1234,
        "tenant_keys": 2,
        "members": 5,
    },
    "keys": [
        {
            "provider": "aws-kms",
            "key_id_suffix": "a1b2c3d4e5f6",
            "destroyed": True,
            "deletion_window_days": 7,
        },
        {
            "provider": "kodori-managed",
            "key_id_suffix": "9f8e7d6c5b4a",
            "destroyed": True,
            "deletion_window_days": None,
        },
    ],
    "coverage": {
        "covered": ["blob objects", "wrapped data keys", "tenant key material held by Kodori"],
        "not_covered": [
            "database backups older than the erasure (expire after 35 days)",
            "copies users downloaded",
        ],
    },
    "audit": {"chain_head": {"seq": 812, "hash": "ab" * 32}, "retained_until": "2033-05-01T09:31:07.250000Z"},
    "warnings": [],
    "extensions": {},
}

PURGE_RECORD: dict[str, Any] = {
    "tenant": {"id": 42, "name": "Zoë's Bäckerei"},
    "certificate_id": "c0ffee00-1234-4abc-8def-0123456789ab",
    "purged_at": "2033-05-02T00:00:00.000000Z",
    "events_removed": 812,
    "last_head": {"seq": 812, "hash": "ab" * 32},
}


@pytest.fixture
def signed() -> dict[str, Any]:
    return signing.sign_document(CERTIFICATE_KIND, CERTIFICATE)


def keypair() -> tuple[Ed25519PrivateKey, str]:
    """A key pair Kodori knows nothing of: (private key, base64 public key)."""
    private = Ed25519PrivateKey.generate()
    raw = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return private, base64.b64encode(raw).decode()


def signed_by(private: Ed25519PrivateKey, signed: dict[str, Any], *, embed: bool = True) -> dict[str, Any]:
    """``signed`` re-signed with ``private``; with ``embed``, naming that key (else still naming Kodori's)."""
    forged = copy.deepcopy(signed)
    message = verify_bundle.document_message(forged["kind"], forged["document"])
    forged["signature"]["value"] = base64.b64encode(private.sign(message)).decode()
    if embed:
        raw = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        forged["signature"]["public_key"] = base64.b64encode(raw).decode()
        forged["signature"]["key_id"] = verify_bundle.key_id(raw)
    return forged


def run(path: Path, *args: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """The verifier's ``main`` in this process: (exit status, stdout + stderr)."""
    code = verify_bundle.main([str(path), *args])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def write(path: Path, value: Any) -> Path:
    path.write_text(json.dumps(value, ensure_ascii=False, indent=2), encoding="utf-8")
    return path


# --- Signing and verifying ----------------------------------------------------------------------------------


def test_it_signs_the_documented_format(signed: dict[str, Any]) -> None:
    assert list(signed) == ["format", "v", "kind", "document", "signature"]
    assert (signed["format"], signed["v"], signed["kind"]) == ("kodori-signed-document", 1, CERTIFICATE_KIND)
    assert signed["document"] == CERTIFICATE and signed["document"] is not CERTIFICATE
    assert signed["signature"] == {
        "algorithm": "Ed25519",
        "key_id": signing.current_key_id(),
        "public_key": signing.public_key_b64(),
        "value": signed["signature"]["value"],
    }
    assert len(base64.b64decode(signed["signature"]["value"])) == 64


def test_the_signed_message_is_pinned() -> None:
    """The exact bytes, so that neither side can drift: label, then sorted compact UTF-8 JSON."""
    message = verify_bundle.document_message(PURGE_KIND, {"b": [1, "é", None, True], "a": {}})
    assert message == (
        b'kodori signed document v1\x00{"document":{"a":{},"b":[1,"\xc3\xa9",null,true]},'
        b'"kind":"kodori-audit-purge-record","v":1}'
    )


def test_a_document_message_never_looks_like_a_checkpoint_message() -> None:
    checkpoint = verify_bundle.checkpoint_message(42, 812, "ab" * 32, "2026-05-01T09:31:07.250000Z")
    assert checkpoint.startswith(b"{")
    assert verify_bundle.document_message(CERTIFICATE_KIND, CERTIFICATE).startswith(
        b"kodori signed document v1\x00{"
    )


def test_it_passes_a_signed_certificate_with_the_deployment_key(signed: dict[str, Any]) -> None:
    report = verify_bundle.verify_document(signed, [signing.public_key_b64()])
    assert report.failure is None, report.lines
    assert f"signature: valid (Ed25519), by the trusted key {signing.current_key_id()}" in report.lines
    assert signing.document_signature_valid(signed)


def test_it_passes_a_purge_record_and_prints_its_fields_flatly(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path / "purge.json", signing.sign_document(PURGE_KIND, PURGE_RECORD))
    code, out = run(path, "--public-key", signing.public_key_b64(), capsys=capsys)
    assert code == 0, out
    for line in (
        "kodori-audit-purge-record:",
        "  tenant.id: 42",
        "  tenant.name: Zoë's Bäckerei",
        "  events_removed: 812",
        "  last_head.seq: 812",
        f"  last_head.hash: {'ab' * 32}",
    ):
        assert line in out.splitlines(), line
    assert out.rstrip().endswith("RESULT: PASS")


def test_the_key_order_and_layout_of_the_file_do_not_matter(
    signed: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The signature covers canonical JSON: a document stored in ``jsonb`` (keys reordered) still verifies."""

    def reversed_keys(value: Any) -> Any:
        if isinstance(value, dict):
            return {key: reversed_keys(value[key]) for key in reversed(list(value))}
        return [reversed_keys(item) for item in value] if isinstance(value, list) else value

    path = tmp_path / "certificate.json"
    path.write_text(json.dumps(reversed_keys(signed), indent=4, ensure_ascii=True), encoding="utf-8")
    assert run(path, "--public-key", signing.public_key_b64(), capsys=capsys)[0] == 0


def test_the_signed_copy_is_independent_of_the_callers_dict() -> None:
    content = copy.deepcopy(CERTIFICATE)
    signed = signing.sign_document(CERTIFICATE_KIND, content)
    content["destroyed"]["blobs"] = 0
    assert signing.document_signature_valid(signed)


# --- Every field, tampered ----------------------------------------------------------------------------------

# The shape of a signed object, to enumerate its leaves when the tests are collected (signing needs settings).
SHAPE: dict[str, Any] = {
    "format": "kodori-signed-document",
    "v": 1,
    "kind": CERTIFICATE_KIND,
    "document": CERTIFICATE,
    "signature": {"algorithm": "Ed25519", "key_id": "", "public_key": "", "value": ""},
}

Path_ = tuple[str | int, ...]


def edits(value: Any, path: Path_ = ()) -> Iterator[tuple[Path_, str]]:
    """Every change to try: each leaf changed, a key added to and each key removed from every object, an item
    appended to and the last removed from every list."""
    if isinstance(value, dict):
        yield path, "key added"
        for key, item in value.items():
            yield (*path, key), "removed"
            yield from edits(item, (*path, key))
    elif isinstance(value, list):
        yield path, "item appended"
        if value:
            yield path, "last item removed"
        for index, item in enumerate(value):
            yield from edits(item, (*path, index))
    else:
        yield path, "changed"


def changed(leaf: Any) -> Any:
    if isinstance(leaf, bool):
        return not leaf
    if isinstance(leaf, int):
        return leaf + 1
    if isinstance(leaf, str):
        return leaf + "x"
    assert leaf is None
    return 0


def tampered(signed: dict[str, Any], path: Path_, edit: str) -> dict[str, Any]:
    forged = copy.deepcopy(signed)
    if edit == "removed":
        *parent, last = path
        del reduce_path(forged, tuple(parent))[last]
    elif edit == "changed":
        *parent, last = path
        container = reduce_path(forged, tuple(parent))
        container[last] = changed(container[last])
    elif edit == "key added":
        reduce_path(forged, path)["forged"] = True
    elif edit == "item appended":
        reduce_path(forged, path).append("forged")
    else:
        reduce_path(forged, path).pop()
    return forged


def reduce_path(value: Any, path: Path_) -> Any:
    for step in path:
        value = value[step]
    return value


def label(path: Path_, edit: str) -> str:
    where = "".join(f"[{step}]" if isinstance(step, int) else f".{step}" for step in path).lstrip(".")
    return f"{where or '(top level)'}: {edit}"


EDITS = list(edits(SHAPE))


def test_the_tamper_walk_covers_every_leaf_and_container() -> None:
    labels = [label(path, edit) for path, edit in EDITS]
    assert len(labels) == len(set(labels)) and len(labels) > 100
    for expected in (
        "(top level): key added",
        "format: changed",
        "v: changed",
        "kind: changed",
        "signature.value: changed",
        "signature: key added",
        "document.tenant.name: changed",
        "document.keys[1].deletion_window_days: changed",
        "document.erasure.cancelled: changed",
        "document.coverage.not_covered[1]: changed",
        "document.warnings: item appended",
        "document.extensions: key added",
        "document.keys: last item removed",
    ):
        assert expected in labels, expected


@pytest.mark.parametrize(("path", "edit"), EDITS, ids=[label(path, edit) for path, edit in EDITS])
def test_any_tampered_field_fails(
    signed: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str], path: Path_, edit: str
) -> None:
    forged = tampered(signed, path, edit)
    assert forged != signed
    file = write(tmp_path / "certificate.json", forged)
    with_key = run(file, "--public-key", signing.public_key_b64(), capsys=capsys)
    without_key = run(file, capsys=capsys)
    for code, out in (with_key, without_key):
        assert code in (1, 2), out
        assert "RESULT: PASS" not in out
        assert ("RESULT: FAIL" in out) == (code == 1)
    assert not signing.document_signature_valid(forged)


def test_a_failure_names_the_rule_broken(
    signed: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key = signing.public_key_b64()
    cases = {
        ("document", "destroyed", "blobs"): "FAIL: signature does not verify",
        ("signature", "key_id"): "FAIL: field 'signature.key_id' ('",
        ("signature", "public_key"): "FAIL: field 'signature.public_key' is not a base64 Ed25519 public key",
        ("signature", "algorithm"): "FAIL: signature algorithm 'Ed25519x' is not Ed25519",
    }
    for path, message in cases.items():
        code, out = run(write(tmp_path / "c.json", tampered(signed, path, "changed")), "--public-key", key,
                        capsys=capsys)  # fmt: skip
        assert code == 1 and message in out, out
    code, out = run(write(tmp_path / "c.json", tampered(signed, (), "key added")), capsys=capsys)
    assert code == 1 and "FAIL: field 'forged' is not expected" in out
    code, out = run(write(tmp_path / "c.json", tampered(signed, ("document",), "removed")), capsys=capsys)
    assert code == 1 and "FAIL: field 'document' is missing" in out
    code, out = run(write(tmp_path / "c.json", tampered(signed, ("signature",), "key added")), capsys=capsys)
    assert code == 1 and "FAIL: field 'signature.forged' is not expected" in out
    code, out = run(write(tmp_path / "c.json", tampered(signed, ("kind",), "changed")), capsys=capsys)
    assert code == 2 and "unknown document kind 'kodori-erasure-certificatex'" in out


def test_a_version_true_is_not_version_1(signed: dict[str, Any]) -> None:
    with pytest.raises(verify_bundle.DocumentError, match="unknown signed document version True"):
        verify_bundle.verify_document({**signed, "v": True}, [])


def test_a_repeated_key_makes_the_file_unreadable(
    signed: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Readers differ on which value of a repeated key they keep: such a file is refused, not interpreted."""
    text = json.dumps(signed, ensure_ascii=False)
    path = tmp_path / "c.json"
    path.write_text(
        text.replace('"kind":', '"kind": "kodori-audit-purge-record", "kind":', 1), encoding="utf-8"
    )
    code, out = run(path, "--public-key", signing.public_key_b64(), capsys=capsys)
    assert code == 2 and "'kind' appears twice" in out


def test_a_non_canonical_base64_signature_fails(signed: dict[str, Any]) -> None:
    """One spelling per signature: a copy with a newline or spare padding is not the signed object."""
    for value in (signed["signature"]["value"] + "\n", signed["signature"]["value"] + "=="):
        forged = {**signed, "signature": {**signed["signature"], "value": value}}
        assert verify_bundle.verify_document(forged, [signing.public_key_b64()]).failure is not None


# --- Keys: origin versus integrity --------------------------------------------------------------------------


def test_a_document_resigned_with_another_key_fails_against_the_real_key(
    signed: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    mallory, mallory_public = keypair()
    forged = signed_by(mallory, signed)
    forged["document"]["destroyed"]["blobs"] = 999999
    forged = signed_by(mallory, forged)
    path = write(tmp_path / "certificate.json", forged)

    code, out = run(path, "--public-key", signing.public_key_b64(), capsys=capsys)
    assert code == 1
    assert f"FAIL: signed by an unknown key {forged['signature']['key_id']}" in out

    code, out = run(path, capsys=capsys)
    assert code == 0, out
    assert "WARNING: no --public-key given" in out and "which proves integrity only, not origin" in out
    assert "NOTE: this PASS proves integrity only, not origin (no --public-key given)" in out
    assert "  destroyed: blobs = 999999" in out

    code, out = run(path, "--public-key", mallory_public, capsys=capsys)
    assert code == 0 and "WARNING" not in out and "NOTE" not in out


def test_a_document_signed_by_another_key_but_naming_kodoris_fails_everywhere(
    signed: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    mallory, _ = keypair()
    path = write(tmp_path / "certificate.json", signed_by(mallory, signed, embed=False))
    for args in ((), ("--public-key", signing.public_key_b64())):
        code, out = run(path, *args, capsys=capsys)
        assert code == 1 and "FAIL: signature does not verify" in out, out


def test_the_honest_document_without_a_key_passes_with_the_warning(
    signed: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = run(write(tmp_path / "certificate.json", signed), capsys=capsys)
    assert code == 0 and "integrity only, not origin" in out


def test_any_of_several_given_keys_may_be_the_signer(signed: dict[str, Any]) -> None:
    _, other = keypair()
    report = verify_bundle.verify_document(signed, [other, signing.public_key_b64()])
    assert report.failure is None, report.lines


def test_document_signature_valid_refuses_a_key_that_names_itself_correctly(signed: dict[str, Any]) -> None:
    mallory, mallory_public = keypair()
    forged = signed_by(mallory, signed)
    # Well formed, and valid under the key it names: only trust is missing.
    assert verify_bundle.verify_document(forged, [mallory_public]).failure is None
    assert not signing.document_signature_valid(forged)
    assert not signing.document_signature_valid(signed_by(mallory, signed, embed=False))


def test_document_signature_valid_refuses_what_is_not_a_signed_document(signed: dict[str, Any]) -> None:
    for junk in ({}, {"format": "kodori-signed-document"}, {**signed, "v": 2}, {**signed, "signature": "x"}):
        assert not signing.document_signature_valid(junk)
    assert not signing.document_signature_valid([signed])  # type: ignore[arg-type]


def test_a_document_signed_by_a_retired_key_stays_valid_while_that_key_is_trusted(settings: Any) -> None:
    old_private, old_public = signing.generate_private_key()
    new_private, _ = signing.generate_private_key()
    settings.AUDIT_SIGNING_KEY = old_private
    signed = signing.sign_document(CERTIFICATE_KIND, CERTIFICATE)
    settings.AUDIT_SIGNING_KEY = new_private
    assert not signing.document_signature_valid(signed)
    settings.AUDIT_PREVIOUS_PUBLIC_KEYS = [old_public]
    assert signing.document_signature_valid(signed)


# --- The summary of a certificate ---------------------------------------------------------------------------


def test_a_pass_summarises_the_certificate(
    signed: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = run(write(tmp_path / "certificate.json", signed), "--public-key", signing.public_key_b64(),
                    capsys=capsys)  # fmt: skip
    assert code == 0, out
    lines = out.splitlines()
    summary = lines[lines.index("erasure certificate: tenant Zoë's Bäckerei 株式会社 🥐 (id 42), "
                                "erased at 2026-05-01T09:31:07.250000Z"):]  # fmt: skip
    assert summary[1:] == [
        "  destroyed: blob_bytes = 98765432100",
        "  destroyed: blobs = 1234",
        "  destroyed: data_keys = 1234",
        "  destroyed: members = 5",
        "  destroyed: tenant_keys = 2",
        "  key: provider aws-kms, key id ending a1b2c3d4e5f6",
        "  key: provider kodori-managed, key id ending 9f8e7d6c5b4a",
        "  not covered: database backups older than the erasure (expire after 35 days)",
        "  not covered: copies users downloaded",
        "RESULT: PASS",
    ]


ODD_CERTIFICATES: list[dict[str, Any]] = [
    {},
    {"tenant": "acme", "erasure": [], "destroyed": [1, 2], "keys": {"provider": "x"}, "coverage": "all"},
    {
        "tenant": {"name": None, "id": {"deep": [True]}},
        "destroyed": {},
        "keys": [None, 3, {}],
        "coverage": {},
    },
    {"tenant": {"name": "\x1b[31mred\u202e"}, "coverage": {"not_covered": [{"a": 1}, None, "line\nbreak"]}},
]


@pytest.mark.parametrize("content", ODD_CERTIFICATES, ids=range(len(ODD_CERTIFICATES)))
def test_an_odd_but_validly_signed_certificate_is_summarised_without_crashing(
    content: dict[str, Any],
) -> None:
    report = verify_bundle.verify_document(signing.sign_document(CERTIFICATE_KIND, content), [])
    assert report.failure is None, report.lines
    summary = "\n".join(report.lines)
    assert "erasure certificate: tenant " in summary
    assert "\x1b" not in summary and "\u202e" not in summary and "line\nbreak" not in summary


def test_missing_fields_of_a_certificate_print_as_a_question_mark() -> None:
    report = verify_bundle.verify_document(signing.sign_document(CERTIFICATE_KIND, {}), [])
    assert report.lines[-5:] == [
        "erasure certificate: tenant ? (id ?), erased at ?",
        "  destroyed: ?",
        "  key: provider ?, key id ending ?",
        "  not covered: ?",
        "NOTE: this PASS proves integrity only, not origin (no --public-key given)",
    ]


# --- sign_document's refusals -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ({"destroyed": {"ratio": 0.5}}, r"document\.destroyed\.ratio is a float"),
        ({"keys": [{"size": 1}, {"size": 1.0}]}, r"document\.keys\[1\]\.size is a float"),
        ({"x": float("nan")}, "is a float"),
        ({"ids": (1, 2)}, "is a tuple"),
        ({"ids": {1, 2}}, "is a set"),
        ({"raw": b"bytes"}, "is a bytes"),
        ({"tenant": {7: "acme"}}, "has a key that is not a string: 7"),
        ({"name": "\ud800"}, "not valid Unicode text"),
    ],
)
def test_sign_document_refuses_content_without_one_canonical_encoding(content: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        signing.sign_document(CERTIFICATE_KIND, content)


def test_sign_document_refuses_an_unknown_kind() -> None:
    for kind in ("kodori-audit-checkpoint", "kodori-erasure-certificate ", ""):
        with pytest.raises(ValueError, match="unknown signed document kind"):
            signing.sign_document(kind, CERTIFICATE)


def test_sign_document_refuses_content_that_is_not_an_object() -> None:
    with pytest.raises(ValueError, match="content is a dict, not list"):
        signing.sign_document(CERTIFICATE_KIND, [CERTIFICATE])  # type: ignore[arg-type]


def test_the_verifier_fails_a_float_even_if_someone_signed_one(tmp_path: Path) -> None:
    mallory, mallory_public = keypair()
    forged = signing.sign_document(CERTIFICATE_KIND, {"x": 1})
    forged["document"]["x"] = 1.5
    report = verify_bundle.verify_document(signed_by(mallory, forged), [mallory_public])
    assert report.failure is not None and "is a float" in report.failure


# --- The stand-alone script, as an auditor runs it ----------------------------------------------------------


def offline(script: Path, *args: str, without_cryptography: bool = False) -> subprocess.CompletedProcess[str]:
    """Run the copied verifier isolated from Kodori (``-I``: no cwd, no PYTHONPATH, no user site)."""
    argv = [str(script), *args]
    if without_cryptography:
        code = (
            "import runpy, sys; sys.modules['cryptography'] = None; "
            f"sys.argv = {argv!r}; runpy.run_path(sys.argv[0], run_name='__main__')"
        )
        command = [sys.executable, "-I", "-c", code]
    else:
        command = [sys.executable, "-I", *argv]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, cwd=script.parent)


@pytest.fixture
def script(tmp_path: Path) -> Path:
    copied = tmp_path / "auditor" / "verify_audit_bundle.py"
    copied.parent.mkdir()
    shutil.copyfile(REPO / "audit" / "verify_bundle.py", copied)
    return copied


def test_the_standalone_script_passes_the_certificate_and_prints_its_summary(
    signed: dict[str, Any], script: Path
) -> None:
    certificate = write(script.parent / "certificate.json", signed)
    result = offline(script, str(certificate), "--public-key", signing.public_key_b64())
    assert result.returncode == 0, result.stdout + result.stderr
    assert (
        "erasure certificate: tenant Zoë's Bäckerei 株式会社 🥐 (id 42), erased at 2026-05-01T09:31"
        in result.stdout
    )
    assert "  key: provider aws-kms, key id ending a1b2c3d4e5f6" in result.stdout
    assert "  not covered: copies users downloaded" in result.stdout
    assert result.stdout.rstrip().endswith("RESULT: PASS")


def test_the_standalone_script_fails_a_tampered_certificate(signed: dict[str, Any], script: Path) -> None:
    forged = tampered(signed, ("document", "keys", 0, "key_id_suffix"), "changed")
    result = offline(
        script, str(write(script.parent / "c.json", forged)), "--public-key", signing.public_key_b64()
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "FAIL: signature does not verify" in result.stdout
    assert result.stdout.rstrip().endswith("RESULT: FAIL")


@pytest.mark.parametrize(
    "content",
    [b"not json at all", b"\xff\xfe\x00garbage", b"[1, 2, 3]", b'{"format": "kodori-audit-bundle"}', b""],
    ids=["text", "binary", "a list", "another format", "empty"],
)
def test_the_standalone_script_cannot_read_garbage(script: Path, content: bytes) -> None:
    garbage = script.parent / "certificate.json"
    garbage.write_bytes(content)
    result = offline(script, str(garbage), "--public-key", signing.public_key_b64())
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.startswith("ERROR: ") and "RESULT" not in result.stdout


def test_the_standalone_script_refuses_bundle_options_for_a_document(
    signed: dict[str, Any], script: Path
) -> None:
    certificate = str(write(script.parent / "certificate.json", signed))
    for option in (("--extends", certificate), ("--save-head", "head.json"), ("--require-signatures",)):
        result = offline(script, certificate, *option)
        assert result.returncode == 2, result.stdout + result.stderr
        assert f"{option[0]}: for audit bundles only" in result.stderr
    assert not (script.parent / "head.json").exists()


def test_the_standalone_script_recognises_a_document_by_its_content(
    signed: dict[str, Any], script: Path
) -> None:
    """A certificate saved without ``.json`` (a mail attachment renamed, say) is still a certificate."""
    certificate = script.parent / "certificate.txt"
    certificate.write_text(json.dumps(signed), encoding="utf-8")
    result = offline(script, str(certificate), "--public-key", signing.public_key_b64())
    assert result.returncode == 0 and "erasure certificate: tenant" in result.stdout


def test_without_cryptography_a_document_cannot_be_checked(signed: dict[str, Any], script: Path) -> None:
    certificate = str(write(script.parent / "certificate.json", signed))
    result = offline(script, certificate, "--public-key", signing.public_key_b64(), without_cryptography=True)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "pip install cryptography" in result.stderr and "RESULT" not in result.stdout
