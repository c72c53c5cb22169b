"""Keep the GCP emulator's keys across restarts: a JSON state file for ``make run``.

Tests run in memory; a developer's ``make run`` must not lose its key material when the emulator restarts, or
every tenant key version wrapped under it becomes undecryptable. What is saved: key rings, crypto keys
(internal uid, versions with their AES key material and state, primary), IAM bindings, service accounts and
the extra workload identity providers (their public keys as JWKs). What is not: access tokens (clients simply
exchange again) and the built-in issuer's private key (the subject token file is rewritten at every start).

The file holds raw key material: it lives in the developer's state directory, never anywhere shared.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from emulators.gcp_state import CryptoKey, KeyVersion, VersionState
from emulators.gcp_sts import OidcProvider, public_key_from
from emulators.jose import rsa_public_jwk

if TYPE_CHECKING:
    from emulators.gcp_kms import GcpKmsEmulator

FORMAT = 1


def dump(emulator: GcpKmsEmulator) -> dict[str, Any]:
    store, federation = emulator.store, emulator.federation
    with store.lock:
        keys = [
            {
                "name": key.name,
                "uid": key.uid.hex(),
                "primary": key.primary,
                "create_time": key.create_time,
                "versions": [
                    {
                        "number": v.number,
                        "material": v.material.hex(),
                        "state": v.state.value,
                        "create_time": v.create_time,
                        "destroy_time": v.destroy_time,
                    }
                    for v in key.versions.values()
                ],
            }
            for key in store.keys.values()
        ]
        return {
            "format": FORMAT,
            "key_rings": dict(store.key_rings),
            "keys": keys,
            "bindings": sorted(store.bindings),
            "service_accounts": sorted(federation.service_accounts),
            "providers": [
                {
                    "project_number": p.project_number,
                    "pool": p.pool,
                    "provider": p.provider,
                    "issuer": p.issuer,
                    "keys": {kid: rsa_public_jwk(key) for kid, key in p.keys.items()},
                    "allowed_audiences": p.allowed_audiences,
                    "enabled": p.enabled,
                }
                for audience, p in federation.providers.items()
                if audience != emulator.default_audience
            ],
        }


def load(emulator: GcpKmsEmulator, data: dict[str, Any]) -> None:
    if data.get("format") != FORMAT:
        raise ValueError(f"unknown GCP emulator state format {data.get('format')!r}")
    store, federation = emulator.store, emulator.federation
    with store.lock:
        store.key_rings.update({name: float(t) for name, t in data["key_rings"].items()})
        for entry in data["keys"]:
            key = CryptoKey(name=entry["name"], uid=bytes.fromhex(entry["uid"]), primary=entry["primary"],
                            create_time=entry["create_time"])  # fmt: skip
            for v in entry["versions"]:
                key.versions[v["number"]] = KeyVersion(
                    number=v["number"],
                    material=bytes.fromhex(v["material"]),
                    state=VersionState(v["state"]),
                    create_time=v["create_time"],
                    destroy_time=v["destroy_time"],
                )
            store.keys[key.name] = key
        store.bindings.update((b[0], b[1], b[2]) for b in data["bindings"])
        federation.service_accounts.update(data["service_accounts"])
        for p in data["providers"]:
            keys = {kid: public_key_from(jwk) for kid, jwk in p["keys"].items()}
            federation.add_provider(
                OidcProvider(
                    p["project_number"],
                    p["pool"],
                    p["provider"],
                    p["issuer"],
                    keys,
                    p["allowed_audiences"],
                    p["enabled"],
                )
            )


def save(emulator: GcpKmsEmulator, path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    # Written with owner-only permissions: it contains key material.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(dump(emulator), handle)
    tmp.replace(path)


def restore(emulator: GcpKmsEmulator, path: Path) -> bool:
    if not path.exists():
        return False
    load(emulator, json.loads(path.read_text()))
    return True
