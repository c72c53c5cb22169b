"""``manage.py sign_audit_checkpoints``: sign every chain head now (what the periodic task does)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from audit import services


class Command(BaseCommand):
    help = "Sign a checkpoint of every audit chain head that moved since its last checkpoint."

    def handle(self, *args: Any, **options: Any) -> None:
        count = services.sign_checkpoints()
        self.stdout.write(f"signed {count} checkpoint(s)")
