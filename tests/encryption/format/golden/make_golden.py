"""Write the golden v1 blobs and their manifest (run once; the tests only read the results).

    python tests/encryption/format/golden/make_golden.py

Everything is fixed: DEKs, tenant and blob ids, salts, and plaintexts (SHA-256 in counter mode
over a label), so running it again writes the same bytes. The point of the committed files is
that a future change to the format or the code cannot silently stop reading blobs written today:
``tests/encryption/format/test_golden_blobs.py`` decrypts them and must never regenerate them. If this
script ever writes different bytes, the format changed, and that needs a new format version.
"""

from __future__ import annotations

import hashlib
import json
import sys
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[3]))

from encryption.format import envelope  # noqa: E402  (needs the repository on sys.path)

BLOBS = [
    ("empty.kdrb", 0),
    ("one-byte.kdrb", 1),
    ("one-chunk.kdrb", 16384),
    ("one-chunk-plus-one.kdrb", 16385),
    ("hundred-kib.kdrb", 100 * 1024 + 123),
]


def _stream(label: str, size: int) -> bytes:
    """``size`` bytes of SHA-256 in counter mode over ``label``: fixed, incompressible."""
    blocks = (hashlib.sha256(f"{label}/{i}".encode()).digest() for i in range((size + 31) // 32))
    return b"".join(blocks)[:size]


def main() -> None:
    manifest = []
    for n, (name, size) in enumerate(BLOBS, start=1):
        dek = _stream(f"kodori golden dek {n}", 32)
        salt = _stream(f"kodori golden salt {n}", 24)
        tenant_id = 1000 + n
        blob_id = uuid.UUID(bytes=_stream(f"kodori golden blob id {n}", 16), version=4)
        plaintext = _stream(f"kodori golden plaintext {n}", size)
        blob = envelope.encrypt(dek, envelope.blob_context(tenant_id, blob_id), plaintext, salt=salt)
        (HERE / name).write_bytes(blob)
        manifest.append(
            {
                "file": name,
                "format_version": envelope.FORMAT_VERSION,
                "dek": dek.hex(),
                "tenant_id": tenant_id,
                "blob_id": str(blob_id),
                "salt": salt.hex(),
                "plaintext_size": size,
                "plaintext_sha256": hashlib.sha256(plaintext).hexdigest(),
                "ciphertext_size": len(blob),
                "ciphertext_sha256": hashlib.sha256(blob).hexdigest(),
            }
        )
    (HERE / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")


if __name__ == "__main__":
    main()
