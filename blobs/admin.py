"""Support's view of the scrub: its passes, read-only (``blobs.scrub``; docs/operations.md, "Scrub").

Importing ``blobs.scrub`` here also loads its ``ScrubPass`` model in every process: the admin's autodiscovery
imports this module while Django starts.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from .scrub import ScrubPass


@admin.register(ScrubPass)
class ScrubPassAdmin(admin.ModelAdmin):
    list_display = [
        "id",
        "scope_label",
        "status",
        "started_at",
        "ended_at",
        "runs",
        "verified",
        "damaged",
        "missing",
        "not_checked",
        "mib_read",
    ]
    list_filter = ["status"]
    list_select_related = ["tenant"]
    ordering = ["-started_at", "-id"]

    @admin.display(description="scope")
    def scope_label(self, obj: ScrubPass) -> str:
        return obj.scope

    @admin.display(description="MiB read")
    def mib_read(self, obj: ScrubPass) -> str:
        return f"{obj.bytes_read / 2**20:,.1f}"

    # Passes are the scrub's own bookkeeping: nobody adds, edits or deletes them by hand.
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
