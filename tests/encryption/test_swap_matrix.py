"""Swap matrix: ciphertexts, wrapped DEKs and wrapped TKVs moved between 5 tenants x 10 blobs never open."""

from __future__ import annotations

import itertools
import os
import uuid
from typing import Any

import pytest

from encryption import keyring
from encryption.format import envelope
from encryption.format.errors import NotAuthentic
from encryption.models import DataKey, TenantKeyVersion
from encryption.providers import KeyContext, ProviderError, provider_for
from tenants.models import Tenant

pytestmark = pytest.mark.django_db

TENANTS, BLOBS = 5, 10


@pytest.fixture
def world(db: None) -> list[dict[str, Any]]:
    keyring.cache.clear()
    blobs = []
    for t in range(TENANTS):
        tenant = Tenant.objects.create(slug=f"t{t}", name=f"Tenant {t}")
        if t % 2:
            keyring.active_tkv(tenant)
            keyring.add_key_version(tenant)  # some tenants on version 2, so version numbers differ too
        for _ in range(BLOBS):
            blob_id = uuid.uuid4()
            dek, row = keyring.new_data_key(tenant, blob_id, envelope.FORMAT_VERSION)
            plaintext = os.urandom(100)
            ciphertext = envelope.encrypt(dek, envelope.blob_context(tenant.pk, blob_id), plaintext)
            blobs.append(
                {
                    "tenant": tenant,
                    "blob_id": blob_id,
                    "row": row,
                    "plaintext": plaintext,
                    "ciphertext": ciphertext,
                }
            )
    return blobs


def test_each_blob_opens_in_place(world: list[dict[str, Any]]) -> None:
    for b in world:
        dek = keyring.open_data_key(b["tenant"], b["blob_id"])
        ctx = envelope.blob_context(b["tenant"].pk, b["blob_id"])
        assert envelope.decrypt(dek, ctx, b["ciphertext"]) == b["plaintext"]


def test_ciphertexts_swapped_between_blobs_never_decrypt(world: list[dict[str, Any]]) -> None:
    deks = {b["blob_id"]: keyring.open_data_key(b["tenant"], b["blob_id"]) for b in world}
    attempts = successes = 0
    for a, b in itertools.permutations(world, 2):
        dek = deks[b["blob_id"]]
        ctx = envelope.blob_context(b["tenant"].pk, b["blob_id"])
        attempts += 1
        try:
            envelope.decrypt(dek, ctx, a["ciphertext"])
            successes += 1
        except NotAuthentic:
            pass
    assert attempts == (TENANTS * BLOBS) * (TENANTS * BLOBS - 1)
    assert successes == 0


def test_wrapped_deks_swapped_between_rows_never_open(world: list[dict[str, Any]]) -> None:
    originals = {b["row"].pk: bytes(b["row"].wrapped_dek) for b in world}
    attempts = successes = 0
    for a, b in itertools.permutations(world, 2):
        DataKey.objects.filter(pk=b["row"].pk).update(wrapped_dek=originals[a["row"].pk])
        attempts += 1
        try:
            keyring.open_data_key(b["tenant"], b["blob_id"])
            successes += 1
        except ProviderError:
            pass
        DataKey.objects.filter(pk=b["row"].pk).update(wrapped_dek=originals[b["row"].pk])
    assert attempts == 2450 and successes == 0


def test_wrapped_tkvs_swapped_between_tenants_and_versions_never_unwrap(world: list[dict[str, Any]]) -> None:
    tkvs = list(TenantKeyVersion.objects.select_related("kek"))
    attempts = successes = 0
    for a, b in itertools.permutations(tkvs, 2):
        context = KeyContext(tenant_id=b.tenant_id, key_version=b.version)
        attempts += 1
        try:
            provider_for(b.kek).unwrap(bytes(a.wrapped_key), context)
            successes += 1
        except ProviderError:
            pass
    assert attempts == len(tkvs) * (len(tkvs) - 1) and len(tkvs) == 7
    assert successes == 0
