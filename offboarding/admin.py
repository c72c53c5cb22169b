"""Support's side of offboarding: schedule or cancel a tenant's deletion on the customer's written request
(actions on the tenant list, composed into the Tenant admin by ``kodori/admin.py``), and the deletion
requests with their erasure certificates to download."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.contrib import admin
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html

from tenants.admin_reason import apply_each, ask_for_reason, reason_given
from tenants.lifecycle import TenantStateError, due_text
from tenants.models import Tenant

from . import certificate, services
from .models import DeletionRequest, Via


class TenantOffboardingActions:
    """The two actions support may take on a customer's written request; each asks for that request."""

    actions = ["schedule_deletion", "cancel_deletion"]

    # "change": like every admin action that changes a tenant, not for staff who may only look at tenants.
    @admin.action(
        description="Schedule deletion (customer's written request, 30 days)", permissions=["change"]
    )
    def schedule_deletion(self, request: HttpRequest, queryset: QuerySet[Tenant]) -> TemplateResponse | None:
        form, reason = reason_given(
            request,
            "The customer's written request (quote it, with its date and sender)",
            "Support schedules a deletion only on the customer's written request: quote it.",
        )
        tenants = list(queryset.order_by("name"))
        if reason:

            def act(tenant: Tenant) -> str:
                row = services.schedule_deletion(
                    tenant, actor=request.user, via=Via.SUPPORT, days=services.DEFAULT_DAYS, reason=reason
                )
                return f"deletion scheduled for {due_text(row.due_at)}; owners e-mailed."

            apply_each(self, request, tenants, act, refused=TenantStateError, tenant_of=lambda t: t.name)  # type: ignore[arg-type]
            return None
        return ask_for_reason(
            self,  # type: ignore[arg-type]
            request,
            form=form,
            action="schedule_deletion",
            title="Schedule tenant deletion",
            intro=(
                f"Schedule the deletion of these tenants in {services.DEFAULT_DAYS} days? Each becomes "
                "read-only at once, its owners are e-mailed, and any owner can cancel until the date. Then "
                "Kodori destroys its keys and erases everything. The request you quote is recorded in each "
                "tenant's audit log."
            ),
            lines=[f"{t.name} ({t.slug}) — {t.get_state_display()}" for t in tenants],
            pks=[t.pk for t in tenants],
            submit="Schedule deletion",
        )

    @admin.action(description="Cancel scheduled deletion (customer's request)", permissions=["change"])
    def cancel_deletion(self, request: HttpRequest, queryset: QuerySet[Tenant]) -> TemplateResponse | None:
        form, reason = reason_given(request, "Reason (the customer's request)")
        tenants = list(queryset.order_by("name"))
        if reason:

            def act(tenant: Tenant) -> str:
                services.cancel_deletion(tenant, actor=request.user, via=Via.SUPPORT, reason=reason)
                return "deletion cancelled; the tenant is active again."

            apply_each(self, request, tenants, act, refused=TenantStateError, tenant_of=lambda t: t.name)  # type: ignore[arg-type]
            return None
        return ask_for_reason(
            self,  # type: ignore[arg-type]
            request,
            form=form,
            action="cancel_deletion",
            title="Cancel tenant deletion",
            intro=(
                "Cancel the scheduled deletion of these tenants? They become active and writable again "
                "at once."
            ),
            lines=[f"{t.name} ({t.slug}) — {t.get_state_display()}" for t in tenants],
            pks=[t.pk for t in tenants],
            submit="Cancel deletion",
        )


@admin.register(DeletionRequest)
class DeletionRequestAdmin(admin.ModelAdmin):
    list_display = ["tenant", "status", "via", "requested_at", "due_at", "step", "completed_at", "download"]
    list_filter = ["status", "via"]
    search_fields = ["tenant__name", "tenant__slug", "requested_by_email"]
    readonly_fields = [f.name for f in DeletionRequest._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description="Certificate")
    def download(self, obj: DeletionRequest) -> str:
        if obj.certificate is None:
            return "—"
        url = reverse("admin:offboarding_deletionrequest_certificate", args=[obj.pk])
        return format_html('<a href="{}">Download</a>', url)

    def get_urls(self) -> list[Any]:
        extra = [
            path(
                "<uuid:pk>/certificate.json",
                self.admin_site.admin_view(self.certificate_view),
                name="offboarding_deletionrequest_certificate",
            ),
            path(
                "<uuid:pk>/purge-record.json",
                self.admin_site.admin_view(self.purge_record_view),
                name="offboarding_deletionrequest_purge_record",
            ),
        ]
        return extra + super().get_urls()

    def _document(
        self, request: HttpRequest, pk: Any, field: str, name: Callable[[DeletionRequest], str]
    ) -> HttpResponse:
        """A signed document of a deletion request (``certificate`` or ``purge_record``) as a download."""
        deletion = DeletionRequest.objects.select_related("tenant").filter(pk=pk).first()
        document = getattr(deletion, field, None) if deletion is not None else None
        if deletion is None or document is None or not self.has_view_permission(request, deletion):
            raise Http404(f"No {field.replace('_', ' ')}")
        response = HttpResponse(certificate.as_bytes(document), content_type="application/json")
        response["Content-Disposition"] = f'attachment; filename="{name(deletion)}"'
        return response

    def certificate_view(self, request: HttpRequest, pk: Any) -> HttpResponse:
        return self._document(request, pk, "certificate", certificate.filename)

    def purge_record_view(self, request: HttpRequest, pk: Any) -> HttpResponse:
        return self._document(request, pk, "purge_record", lambda d: f"audit-purge-{d.tenant.slug}.json")
