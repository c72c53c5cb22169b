"""Deleting one blob is cryptographic: its data key goes in the same transaction as its row, so a copy of the
object that survives (a storage version, a backup, a failed delete) can never be opened again."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from django.db import transaction

from blobs import services
from blobs.models import Blob
from encryption import keyring
from encryption.format import envelope
from encryption.format.errors import EnvelopeError
from encryption.models import DataKey
from tests.blobs.support import make_blob, pattern, stored_files

pytestmark = pytest.mark.django_db


def _saved_copy(blob_root: Path) -> bytes:
    (stored,) = stored_files(blob_root)
    return stored.read_bytes()


def test_the_data_key_goes_with_the_row_and_a_saved_copy_opens_with_nothing_left(
    member: Any, blob_root: Path, django_capture_on_commit_callbacks: Any
) -> None:
    data = pattern(40_000)
    blob = make_blob(member, data, name="contract.pdf")
    copy = _saved_copy(blob_root)
    context = envelope.blob_context(blob.tenant_id, blob.pk)
    dek = keyring.open_data_key(blob.tenant, blob.pk)
    assert envelope.decrypt(dek, context, copy) == data  # the copy is the real thing while the key exists

    with django_capture_on_commit_callbacks(execute=True):
        services.delete_blob(blob, actor=member)

    assert not Blob.objects.filter(pk=blob.pk).exists()
    assert not DataKey.objects.filter(blob_id=blob.pk).exists()
    assert stored_files(blob_root) == []
    with pytest.raises(DataKey.DoesNotExist):
        keyring.open_data_key(blob.tenant, blob.pk)
    # Every data key the database still holds (another blob's) fails on this copy.
    other = make_blob(member, b"other", name="other.txt")
    other_dek = keyring.open_data_key(other.tenant, other.pk)
    with pytest.raises(EnvelopeError):
        envelope.decrypt(other_dek, context, copy)


def test_a_failed_object_delete_leaves_only_unreadable_ciphertext(
    member: Any, blob_root: Path, monkeypatch: pytest.MonkeyPatch, django_capture_on_commit_callbacks: Any
) -> None:
    blob = make_blob(member, pattern(1000))

    def store_down(key: str) -> None:
        raise OSError("object store unreachable")

    monkeypatch.setattr(services, "delete_object", store_down)
    with django_capture_on_commit_callbacks(execute=True):
        services.delete_blob(blob, actor=member)  # the failure is logged, not raised: the key is gone already

    assert len(stored_files(blob_root)) == 1  # the object survived ...
    assert not DataKey.objects.filter(blob_id=blob.pk).exists()  # ... with nothing that opens it


def test_row_and_data_key_roll_back_together(member: Any, blob_root: Path) -> None:
    """A transaction that fails after the delete keeps both: never a row without its key, nor a lost key."""
    blob = make_blob(member, pattern(1000))

    class Boom(Exception):
        pass

    with pytest.raises(Boom), transaction.atomic():
        services.delete_blob(blob, actor=member)
        raise Boom

    assert Blob.objects.filter(pk=blob.pk).exists() and DataKey.objects.filter(blob_id=blob.pk).exists()
    assert keyring.open_data_key(blob.tenant, blob.pk)
    assert len(stored_files(blob_root)) == 1
