"""Admin views of the audit log for support: events and checkpoints read-only; chain breaks read-only, plus
acknowledging a break on the customer's behalf, with a reason (an ``audit.break-acknowledged`` event)."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.template.response import TemplateResponse

from tenants.admin_reason import apply_each, ask_for_reason, reason_given

from . import chain, services
from .models import AcknowledgedVia, AuditEvent, ChainBreak, Checkpoint


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


_BREAK_FIELDS = (
    "tenant", "first_bad_seq", "last_bad_seq", "kind", "detail", "reason", "found_at", "found_by",
    "last_seen_at", "acknowledged_at", "ack_actor_name", "ack_actor_email", "ack_via", "ack_reason",
    "ack_seq",
)  # fmt: skip


@admin.register(ChainBreak)
class ChainBreakAdmin(admin.ModelAdmin):
    """Every break a verification found, across tenants: read-only, and acknowledged only with a reason."""

    list_display = ["tenant", "first_bad_seq", "kind", "found_at", "acknowledged_at", "ack_actor_name"]
    list_filter = ["kind", ("acknowledged_at", admin.EmptyFieldListFilter)]
    search_fields = ["tenant__slug", "tenant__name"]
    list_select_related = ["tenant"]
    ordering = ["-found_at"]
    readonly_fields = _BREAK_FIELDS
    fields = _BREAK_FIELDS
    actions = ["acknowledge_breaks"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # "change" is what the acknowledge action needs; a break itself is shown, never edited.
        return obj is None and bool(request.user.has_perm("audit.change_chainbreak"))

    @admin.action(description="Acknowledge the selected breaks (asks for a reason)", permissions=["change"])
    def acknowledge_breaks(
        self, request: HttpRequest, queryset: QuerySet[ChainBreak]
    ) -> TemplateResponse | None:
        form, reason = reason_given(
            request,
            "Reason (what happened, what was done, who asked)",
            "Give the reason: it is recorded in each tenant's audit log.",
        )
        breaks = list(queryset.select_related("tenant").order_by("tenant__name", "first_bad_seq", "pk"))
        if reason:

            def acknowledge(brk: ChainBreak) -> str:
                services.acknowledge_break(
                    brk, reason=reason, via=AcknowledgedVia.SUPPORT, actor=request.user, request=request
                )
                return f"the break at {brk.span} ({brk.kind}) is acknowledged."

            apply_each(
                self, request, breaks, acknowledge, refused=services.AcknowledgementError,
                tenant_of=lambda brk: brk.tenant.name, refused_level=messages.WARNING,
            )  # fmt: skip
            return None
        return ask_for_reason(
            self,
            request,
            form=form,
            action="acknowledge_breaks",
            title="Acknowledge chain breaks",
            intro=(
                "Acknowledge these breaks of tenants' audit chains? Do it only once the cause is known (for "
                "instance the rows were restored from a backup, or the customer accepts the loss). Each "
                "acknowledgement is recorded in the tenant's audit log with your name and reason, and shown "
                "on the tenant's /audit page; Kodori then verifies the rest of the chain past the break."
            ),
            lines=[
                f"{brk.tenant.name}: {brk.span} {brk.kind}: {brk.reason}"
                + (" (acknowledged already)" if chain.acknowledgement(brk) is not None else "")
                for brk in breaks
            ],
            pks=[brk.pk for brk in breaks],
            submit="Acknowledge",
        )
