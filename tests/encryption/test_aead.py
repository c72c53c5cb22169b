"""The wrap primitive (AES-256-GCM, random 96-bit nonce) against Wycheproof and forgeries.

Wycheproof's ``aes_gcm_test.json`` is applied like pyca/cryptography's own test: every AES-256
vector with a 96-bit IV must encrypt to ``ct ‖ tag`` exactly and decrypt back, every invalid one
must fail to open, and IVs of any other size must be refused outright.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from encryption import aead
from encryption.format.errors import EnvelopeError, NotAuthentic
from tests.vectors import vectors_dir

KEY = bytes(range(32))
AAD = b"tenant=7;blob=42;kv=3"


def _vectors_dir() -> Path:
    return vectors_dir()


@pytest.fixture(scope="module")
def gcm_groups() -> list[dict[str, Any]]:
    path = _vectors_dir() / "wycheproof" / "aes_gcm_test.json"
    if not path.is_file():
        # Vendored in the repository: a missing file is a broken checkout, never a reason to skip.
        pytest.fail(f"Wycheproof vectors not found at {path} (tests/vectors, or KODORI_VECTORS_DIR)")
    data = json.loads(path.read_text())
    assert data["algorithm"] == "AES-GCM"
    groups: list[dict[str, Any]] = data["testGroups"]
    assert sum(len(group["tests"]) for group in groups) == data["numberOfTests"] == 316
    return groups


def _h(value: str) -> bytes:
    return bytes.fromhex(value)


def test_it_passes_all_66_aes_256_vectors_with_96_bit_ivs(gcm_groups: list[dict[str, Any]]) -> None:
    valid = invalid = 0
    for group in gcm_groups:
        if group["keySize"] != 256 or group["ivSize"] != 96:
            continue
        assert group["tagSize"] == 128
        for test in group["tests"]:
            key, iv, aad, msg = _h(test["key"]), _h(test["iv"]), _h(test["aad"]), _h(test["msg"])
            sealed = _h(test["ct"]) + _h(test["tag"])
            if test["result"] == "valid":
                assert aead.seal_with_nonce(key, iv, msg, aad) == sealed, f"tc {test['tcId']}"
                assert aead.open_with_nonce(key, iv, sealed, aad) == msg, f"tc {test['tcId']}"
                valid += 1
            else:
                assert test["result"] == "invalid"
                with pytest.raises(NotAuthentic):
                    aead.open_with_nonce(key, iv, sealed, aad)
                invalid += 1
    assert (valid, invalid) == (39, 27)


def test_it_refuses_every_iv_that_is_not_96_bits(gcm_groups: list[dict[str, Any]]) -> None:
    refused = 0
    for group in gcm_groups:
        if group["keySize"] != 256 or group["ivSize"] == 96:
            continue
        for test in group["tests"]:
            key, iv, aad, msg = _h(test["key"]), _h(test["iv"]), _h(test["aad"]), _h(test["msg"])
            assert len(iv) != 12
            with pytest.raises(ValueError, match="nonce"):
                aead.seal_with_nonce(key, iv, msg, aad)
            with pytest.raises(ValueError, match="nonce"):
                aead.open_with_nonce(key, iv, _h(test["ct"]) + _h(test["tag"]), aad)
            refused += 1
    # 19 of 128 bits, one each of 120/160/256/512/1024/2056, two each of 0/8/16/32/48/64/80.
    assert refused == 19 + 6 + 14


def test_it_refuses_keys_that_are_not_256_bits(gcm_groups: list[dict[str, Any]]) -> None:
    refused = 0
    for group in gcm_groups:
        if group["keySize"] == 256 or group["ivSize"] != 96:
            continue
        for test in group["tests"]:
            with pytest.raises(ValueError, match="key"):
                aead.seal_with_nonce(_h(test["key"]), _h(test["iv"]), _h(test["msg"]), _h(test["aad"]))
            refused += 1
    assert refused == 67 + 64
    for size in (0, 16, 24, 31, 33, 64):
        with pytest.raises(ValueError, match="key"):
            aead.seal(bytes(size), b"dek", AAD)
        with pytest.raises(ValueError, match="key"):
            aead.open(bytes(size), bytes(60), AAD)


def test_seal_then_open_round_trips_and_lays_out_nonce_ct_tag() -> None:
    for plaintext in (b"", b"x", os.urandom(32), os.urandom(1000)):
        sealed = aead.seal(KEY, plaintext, AAD)
        assert len(sealed) == aead.NONCE_SIZE + len(plaintext) + aead.TAG_SIZE
        nonce, body = sealed[:12], sealed[12:]
        assert aead.open_with_nonce(KEY, nonce, body, AAD) == plaintext
        assert aead.open(KEY, sealed, AAD) == plaintext


def test_it_rejects_the_wrong_associated_data() -> None:
    sealed = aead.seal(KEY, b"a data key", AAD)
    for aad in (b"", AAD + b"\x00", AAD[:-1], b"tenant=8;blob=42;kv=3"):
        with pytest.raises(NotAuthentic):
            aead.open(KEY, sealed, aad)


def test_it_rejects_the_wrong_key() -> None:
    sealed = aead.seal(KEY, b"a data key", AAD)
    for _ in range(20):
        with pytest.raises(NotAuthentic):
            aead.open(os.urandom(32), sealed, AAD)


def test_it_rejects_every_single_bit_flip() -> None:
    sealed = aead.seal(KEY, os.urandom(32), AAD)
    flipped = 0
    for bit in range(len(sealed) * 8):
        tampered = bytearray(sealed)
        tampered[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(NotAuthentic):
            aead.open(KEY, bytes(tampered), AAD)
        flipped += 1
    assert flipped == (12 + 32 + 16) * 8


def test_it_rejects_truncated_and_extended_values() -> None:
    sealed = aead.seal(KEY, os.urandom(32), AAD)
    for length in range(len(sealed)):
        with pytest.raises(NotAuthentic):
            aead.open(KEY, sealed[:length], AAD)
    for extra in (b"\x00", os.urandom(16)):
        with pytest.raises(NotAuthentic):
            aead.open(KEY, sealed + extra, AAD)
    with pytest.raises(NotAuthentic):
        aead.open_with_nonce(KEY, sealed[:12], sealed[12:27], AAD)


def test_every_failure_looks_the_same() -> None:
    sealed = aead.seal(KEY, b"a data key", AAD)
    errors: list[EnvelopeError] = []
    for key, value, aad in ((os.urandom(32), sealed, AAD), (KEY, sealed, b"other"), (KEY, sealed[:5], AAD)):
        with pytest.raises(NotAuthentic) as caught:
            aead.open(key, value, aad)
        errors.append(caught.value)
    assert len({(type(e), str(e)) for e in errors}) == 1


def test_each_seal_takes_a_fresh_nonce() -> None:
    nonces = {aead.seal(KEY, b"k", AAD)[:12] for _ in range(5000)}
    assert len(nonces) == 5000


def test_rewrap_many_reseals_each_value_and_marks_the_ones_that_do_not_open() -> None:
    old, new = os.urandom(32), os.urandom(32)
    values = [os.urandom(32) for _ in range(4)]
    sealed = [aead.seal(old, v, b"old-%d" % i) for i, v in enumerate(values)]
    flipped = bytearray(sealed[1])
    flipped[-1] ^= 1
    items = [
        (sealed[0], b"old-0", b"new-0"),
        (bytes(flipped), b"old-1", b"new-1"),  # tampered
        (sealed[2], b"old-9", b"new-2"),  # the wrong associated data
        (sealed[3][: aead.OVERHEAD - 1], b"old-3", b"new-3"),  # truncated below nonce + tag
        (sealed[3], b"old-3", b"new-3"),
    ]
    out = aead.Rewrapper(old, new).rewrap_many(items)
    assert [o is None for o in out] == [False, True, True, True, False]
    first, last = out[0], out[4]
    assert first is not None and last is not None
    assert aead.open(new, first, b"new-0") == values[0] and aead.open(new, last, b"new-3") == values[3]
    with pytest.raises(NotAuthentic):
        aead.open(old, first, b"old-0")  # sealed under the new key only
    assert first[: aead.NONCE_SIZE] != last[: aead.NONCE_SIZE]  # one fresh nonce per value
