"""Support's view of keys in the Django admin: every tenant's keys with status, health and last verify error,
a probe re-run per tenant, and re-enabling a disabled key on a customer's request, with a reason.

No staff action can read tenant data or key material (there is none in these rows). The full key identifier
and role are shown to support, as to the tenant's owners; audit events keep only the 12-character suffix. The
key inline and the probe action (``TenantKeyInline``, ``TenantWithKeysAdmin``) are defined here, because
``tenants`` imports none of Kodori's other apps, and registered for ``Tenant`` by the project, in
``kodori/admin.py``, the one place that composes the tenant admin.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.template.response import TemplateResponse

from tenants.admin import TenantAdmin
from tenants.admin_reason import apply_each, ask_for_reason, reason_given
from tenants.models import Tenant

from . import services
from .models import KeyStatus, TenantKey
from .sealing import Trigger

_KEY_FIELDS = [
    "tenant",
    "wrap_method",
    "key_id",
    "canonical_id",
    "config",
    "status",
    "refused_at",
    "last_verified_at",
    "last_verify_error",
    "created_at",
    "activated_at",
    "retired_at",
    "disabled_at",
]


class TenantKeyInline(admin.TabularInline):
    model = TenantKey
    extra = 0
    fields = ["wrap_method", "key_suffix", "status", "refused_at", "last_verified_at", "last_verify_error"]
    readonly_fields = [
        "wrap_method",
        "key_suffix",
        "status",
        "refused_at",
        "last_verified_at",
        "last_verify_error",
    ]
    ordering = ["-created_at"]
    verbose_name = "registered key"
    show_change_link = True

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
    """The tenants app's tenant admin plus the tenant's keys (read-only) and the probe re-run action."""

    inlines = [*TenantAdmin.inlines, TenantKeyInline]
    list_display = [*TenantAdmin.list_display, "active_key"]
    actions = [*TenantAdmin.actions, "reprobe_keys"]

    @admin.display(description="active key")
    def active_key(self, obj: Tenant) -> str:
        key = TenantKey.objects.for_tenant(obj).filter(status=KeyStatus.ACTIVE).first()
        if key is None:
            return "— (none: sealed)" if TenantKey.objects.for_tenant(obj).exists() else "—"
        label = f"{key.get_wrap_method_display()} …{key.key_id_suffix}" if key.key_id else "kodori-managed"
        return f"{label} (refuses Kodori: {key.last_verify_error})" if key.refused_at else label

    @admin.action(description="Re-run the key probe now (seals or unseals)")
    def reprobe_keys(self, request: HttpRequest, queryset: QuerySet[Tenant]) -> None:
        results = [
            services.reverify_tenant(tenant, actor=request.user, trigger=Trigger.SUPPORT_REPROBE)
            for tenant in queryset
        ]
        self.message_user(
            request,
            f"Probed {len(results)} tenant(s): {sum(results)} answered, "
            f"{len(results) - sum(results)} did not.",
            messages.SUCCESS if all(results) else messages.WARNING,
        )


@admin.register(TenantKey)
class TenantKeyAdmin(admin.ModelAdmin):
    """Every registered key, across tenants: read-only, plus re-enabling a disabled key with a reason."""

    list_display = ["tenant", "wrap_method", "key_suffix", "status", "refused_at", "last_verify_error"]
    list_filter = ["status", "wrap_method"]
    search_fields = ["tenant__slug", "tenant__name", "key_id"]
    readonly_fields = list(_KEY_FIELDS)
    fields = tuple(_KEY_FIELDS)
    actions = ["re_enable_keys"]

    @admin.display(description="key")
    def key_suffix(self, obj: TenantKey) -> str:
        return f"…{obj.key_id_suffix}" if obj.key_id else "kodori-managed"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # The change form shows everything read-only; "change" is what the re-enable action needs.
        return bool(request.user.has_perm("encryption.change_tenantkey"))

    @admin.action(
        description="Re-enable the selected disabled keys (asks for a reason)", permissions=["change"]
    )
    def re_enable_keys(self, request: HttpRequest, queryset: QuerySet[TenantKey]) -> TemplateResponse | None:
        form, reason = reason_given(request, "Reason (the customer's request)")
        keys = list(queryset.select_related("tenant").order_by("tenant__name", "pk"))
        if reason:

            def re_enable(key: TenantKey) -> str:
                services.re_enable_key(key, actor=request.user, reason=reason)
                key.refresh_from_db()
                return f"{key.label} re-enabled; it is {key.get_status_display().lower()}."

            apply_each(
                self, request, keys, re_enable, refused=services.KeyCustodyError,
                tenant_of=lambda key: key.tenant.name,
            )  # fmt: skip
            return None
        return ask_for_reason(
            self,
            request,
            form=form,
            action="re_enable_keys",
            title="Re-enable keys",
            intro=(
                "Re-enable these keys? Kodori first checks that each key answers; it then becomes its "
                "tenant's active key if the tenant has none (unsealing it), otherwise retired, and its files "
                "can be read again. Each re-enable is recorded in the tenant's audit log with the reason you "
                "give. Keys that are not disabled are left as they are."
            ),
            lines=[
                f"{key.tenant.name}: {key.label} — {key.get_status_display()}"
                + ("" if key.status == KeyStatus.DISABLED else " (not disabled: left as it is)")
                for key in keys
            ],
            pks=[key.pk for key in keys],
            submit="Re-enable",
        )
