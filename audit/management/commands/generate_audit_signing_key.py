"""``manage.py generate_audit_signing_key``: print a fresh Ed25519 key for AUDIT_SIGNING_KEY, and its public
half.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from audit import signing
from audit.verify_bundle import b64decode, key_id


class Command(BaseCommand):
    help = "Print a new audit signing key (keep the private value secret; publish the public one)."

    def handle(self, *args: Any, **options: Any) -> None:
        private, public = signing.generate_private_key()
        self.stdout.write(f"AUDIT_SIGNING_KEY={private}")
        self.stdout.write(f"# public key {public} (id {key_id(b64decode(public))})")
        self.stdout.write(
            "# rotating? add the current public key (shown on /audit) to AUDIT_PREVIOUS_PUBLIC_KEYS"
        )
