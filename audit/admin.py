"""Read-only admin views of the audit log for support: nothing can be added, changed or deleted here."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from .models import AuditEvent, Checkpoint


class _ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(AuditEvent)
class AuditEventAdmin(_ReadOnlyAdmin):
    list_display = ["tenant", "seq", "type", "created_at", "actor_name", "actor_email"]
    list_filter = ["type"]
    search_fields = ["tenant__slug", "actor_email", "request_id"]
    list_select_related = ["tenant"]
    show_full_result_count = False  # no COUNT(*) over a large table
    ordering = ["tenant", "-seq"]


@admin.register(Checkpoint)
class CheckpointAdmin(_ReadOnlyAdmin):
    list_display = ["tenant", "seq", "signed_at", "key_id", "reason"]
    list_select_related = ["tenant"]
    ordering = ["tenant", "-seq"]
