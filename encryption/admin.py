"""Support's view of keys in the Django admin: every tenant's key status and seal state, and a probe re-run.

Read-only by design: no staff action can read tenant data or key material. The key inline and the probe action
are added to the tenants app's admin here, because ``tenants`` imports none of Kodori's other apps.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from tenants.admin import TenantAdmin
from tenants.models import Tenant

from . import services
from .models import TenantKey


class TenantKeyInline(admin.TabularInline):
    model = TenantKey
    extra = 0
    fields = ["wrap_method", "key_suffix", "status", "activated_at", "last_verified_at", "last_verify_error"]
    readonly_fields = [
        "wrap_method",
        "key_suffix",
        "status",
        "activated_at",
        "last_verified_at",
        "last_verify_error",
    ]
    ordering = ["-created_at"]
    verbose_name = "registered key"

    @admin.display(description="key")
    def key_suffix(self, obj: TenantKey) -> str:
        return f"…{obj.key_id_suffix}" if obj.key_id else "kodori-managed"

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # Whoever may look at a tenant may see its key status (never key material: there is none here).
        return bool(request.user.has_perm("tenants.view_tenant"))

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class TenantWithKeysAdmin(TenantAdmin):
    inlines = [*TenantAdmin.inlines, TenantKeyInline]
    list_display = [*TenantAdmin.list_display, "active_key"]
    actions = [*TenantAdmin.actions, "reprobe_keys"]

    @admin.display(description="active key")
    def active_key(self, obj: Tenant) -> str:
        key = TenantKey.objects.for_tenant(obj).filter(status="active").first()
        if key is None:
            return "—"
        return f"{key.get_wrap_method_display()} …{key.key_id_suffix}" if key.key_id else "kodori-managed"

    @admin.action(description="Re-run the key probe now (seals or unseals)")
    def reprobe_keys(self, request: HttpRequest, queryset: QuerySet[Tenant]) -> None:
        results = [services.reverify_tenant(tenant, actor=request.user) for tenant in queryset]
        self.message_user(
            request,
            f"Probed {len(results)} tenant(s): {sum(results)} answered, "
            f"{len(results) - sum(results)} did not.",
            messages.SUCCESS if all(results) else messages.WARNING,
        )


admin.site.unregister(Tenant)
admin.site.register(Tenant, TenantWithKeysAdmin)
