"""Django admin for support staff: find a tenant, see its members, switch cloud KMS on or off.

The cloud-KMS switch always goes through ``services.set_cloud_kms_enabled`` (from the change form or the list
actions) so that every switch is recorded the same way, with the reason support must give: the change form
asks in a field, the list actions on a confirmation page (the Django admin's intermediate-page pattern).

``TenantAdmin`` is not registered here: the project composes it with the encryption app's key inline and
registers the result once, in ``kodori/admin.py``. ``MembershipAdmin`` is registered here.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.template.response import TemplateResponse

from . import services
from .admin_reason import ask_for_reason, reason_given
from .models import Membership, Tenant


class _ReadOnly:
    """Memberships change only through the members page, where the escalation rules apply and are audited."""

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class MembershipInline(_ReadOnly, admin.TabularInline):
    model = Membership
    extra = 0
    fields = ["user", "role", "created_at"]
    readonly_fields = ["user", "role", "created_at"]


class TenantAdminForm(forms.ModelForm):
    """The tenant form, plus the reason support must give when switching cloud KMS (for the audit log)."""

    cloud_kms_reason = forms.CharField(
        label="Reason for switching Cloud KMS",
        required=False,
        max_length=300,
        help_text="Required when you change the Cloud KMS switch; recorded in the tenant's audit log.",
    )

    class Meta:
        model = Tenant
        fields = ["name", "slug", "cloud_kms_enabled"]

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        if (
            self.instance.pk
            and "cloud_kms_enabled" in self.changed_data
            and not cleaned.get("cloud_kms_reason")
        ):
            self.add_error("cloud_kms_reason", "Say why Cloud KMS is switched (for the tenant's audit log).")
        return cleaned


class SealedFilter(admin.SimpleListFilter):
    title = "sealed"
    parameter_name = "sealed"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("yes", "Sealed"), ("no", "Not sealed")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Tenant]) -> QuerySet[Tenant]:
        if self.value() == "yes":
            return queryset.filter(sealed_at__isnull=False)
        if self.value() == "no":
            return queryset.filter(sealed_at__isnull=True)
        return queryset


class TenantAdmin(admin.ModelAdmin):
    """The tenant admin of this app. Registered by the project (``kodori/admin.py``), which adds the key
    inline and probe action of ``encryption.admin`` to it, since this app imports none of the others."""

    list_display = ["name", "slug", "cloud_kms_enabled", "sealed_at", "created_at"]
    list_filter = ["cloud_kms_enabled", SealedFilter, "created_at"]
    search_fields = ["name", "slug", "memberships__user__email"]
    prepopulated_fields = {"slug": ["name"]}
    form = TenantAdminForm
    readonly_fields = ["sealed_at", "seal_reason", "created_at"]
    fields = [
        "name",
        "slug",
        "cloud_kms_enabled",
        "cloud_kms_reason",
        "sealed_at",
        "seal_reason",
        "created_at",
    ]
    inlines = [MembershipInline]
    actions = ["enable_cloud_kms", "disable_cloud_kms"]

    def save_model(self, request: HttpRequest, obj: Tenant, form: Any, change: bool) -> None:
        wanted = obj.cloud_kms_enabled
        if change and "cloud_kms_enabled" in form.changed_data:
            obj.cloud_kms_enabled = not wanted  # the service makes (and records) the change
        elif not change:
            obj.cloud_kms_enabled = False
        super().save_model(request, obj, form, change)
        reason = form.cleaned_data.get("cloud_kms_reason", "")
        if services.set_cloud_kms_enabled(obj, wanted, actor=request.user, reason=reason):
            obj.cloud_kms_enabled = wanted
            state = "on" if wanted else "off"
            self.message_user(request, f"Cloud KMS switched {state} for {obj.name}.", messages.SUCCESS)

    def _switch(
        self, request: HttpRequest, queryset: QuerySet[Tenant], enabled: bool, action: str
    ) -> TemplateResponse | None:
        """Ask for the reason on a confirmation page; switch only once it is given."""
        state = "on" if enabled else "off"
        form, reason = reason_given(
            request,
            "Reason for switching Cloud KMS",
            "Say why Cloud KMS is switched (for the tenants' audit logs).",
        )
        tenants = list(queryset.order_by("name"))
        if reason:
            changed = sum(
                services.set_cloud_kms_enabled(t, enabled, actor=request.user, reason=reason) for t in tenants
            )
            self.message_user(
                request, f"Cloud KMS switched {state} for {changed} tenant(s).", messages.SUCCESS
            )
            return None  # back to the list
        return ask_for_reason(
            self,
            request,
            form=form,
            action=action,
            title=f"Switch Cloud KMS {state}",
            intro=(
                f"Switch Cloud KMS {state} for these tenants? Each switch is recorded in that tenant's "
                "audit log with the reason you give."
            ),
            lines=[
                f"{t.name} ({t.slug})"
                + (f" — already {state}, stays as it is" if t.cloud_kms_enabled == enabled else "")
                for t in tenants
            ],
            pks=[t.pk for t in tenants],
            submit=f"Switch Cloud KMS {state}",
        )

    @admin.action(description="Switch Cloud KMS on for the selected tenants", permissions=["change"])
    def enable_cloud_kms(self, request: HttpRequest, queryset: QuerySet[Tenant]) -> TemplateResponse | None:
        return self._switch(request, queryset, True, "enable_cloud_kms")

    @admin.action(description="Switch Cloud KMS off for the selected tenants", permissions=["change"])
    def disable_cloud_kms(self, request: HttpRequest, queryset: QuerySet[Tenant]) -> TemplateResponse | None:
        return self._switch(request, queryset, False, "disable_cloud_kms")


@admin.register(Membership)
class MembershipAdmin(_ReadOnly, admin.ModelAdmin):
    list_display = ["user", "tenant", "role", "created_at"]
    list_filter = ["role"]
    search_fields = ["user__email", "tenant__slug", "tenant__name"]
