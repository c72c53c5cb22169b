"""``manage.py sign_audit_checkpoints``: sign every chain head now (what the periodic task does).

Kodori refuses to sign a chain that does not verify, and says so: each refusal is printed with its reason, and
the command then exits 1.
"""

from __future__ import annotations

import sys
from typing import Any

from django.core.management.base import BaseCommand

from audit import services


class Command(BaseCommand):
    help = "Sign a checkpoint of every audit chain head that moved since its last one (exit 1 on refusals)."

    def handle(self, *args: Any, **options: Any) -> None:
        results = services.sign_heads()
        signed = [r for r in results if r.checkpoint is not None]
        refused = [r for r in results if r.refused]
        for result in signed:
            assert result.checkpoint is not None
            self.stdout.write(f"{result.tenant.slug}: signed #{result.checkpoint.seq}")
        for result in refused:
            slug, why = result.tenant.slug, result.refused
            self.stderr.write(f"{slug}: NOT signed, the chain does not verify: {why}")
        self.stdout.write(f"signed {len(signed)} checkpoint(s)")
        if refused:
            self.stderr.write(
                f"refused to sign {len(refused)} chain(s); see /audit or `manage.py verify_audit_chain`"
            )
            sys.exit(1)
