"""List actions that change something on a customer's behalf ask support for a reason first.

The Django admin's intermediate-page pattern, shared: the action returns ``ask_for_reason(...)`` until the
page comes back with a reason (``reason_given``), which the action then passes to the service so it lands in
the tenant's audit log. Used by the cloud-KMS switch (tenants), re-enabling a key (encryption) and
acknowledging an audit chain break (audit); ``apply_each`` then runs the action on each selected row with one
message per row.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.http import HttpRequest
from django.template.response import TemplateResponse


class ReasonForm(forms.Form):
    reason = forms.CharField(
        label="Reason",
        max_length=300,
        widget=forms.TextInput(attrs={"size": 60}),
        help_text="Recorded in each affected tenant's audit log.",
        error_messages={"required": "Give the reason: it is recorded in the tenant's audit log."},
    )


def reason_given(request: HttpRequest, label: str, missing: str = "") -> tuple[ReasonForm, str]:
    """The confirmation form (bound once the page was submitted) and the reason, "" until one is valid.
    ``missing`` is the error shown when the reason is left empty."""
    confirmed = request.POST.get("post") == "yes"
    form = ReasonForm(request.POST if confirmed else None)
    form.fields["reason"].label = label
    if missing:
        form.fields["reason"].error_messages["required"] = missing
    return form, (form.cleaned_data["reason"] if confirmed and form.is_valid() else "")


Row = TypeVar("Row")


def apply_each(
    model_admin: admin.ModelAdmin[Any],
    request: HttpRequest,
    rows: Sequence[Row],
    act: Callable[[Row], str],
    *,
    refused: type[Exception],
    tenant_of: Callable[[Row], str],
    refused_level: int = messages.ERROR,
) -> None:
    """Run ``act`` on each selected row; one message per row: what ``act`` returns, or why it was refused
    (``refused`` errors carry a message for people; the other rows go on)."""
    for row in rows:
        try:
            done = act(row)
        except refused as exc:
            model_admin.message_user(request, f"{tenant_of(row)}: {exc}", refused_level)
        else:
            model_admin.message_user(request, f"{tenant_of(row)}: {done}", messages.SUCCESS)


def ask_for_reason(
    model_admin: admin.ModelAdmin[Any],
    request: HttpRequest,
    *,
    form: ReasonForm,
    action: str,
    title: str,
    intro: str,
    lines: Iterable[str],
    pks: Iterable[Any],
    submit: str,
) -> TemplateResponse:
    context = {
        **model_admin.admin_site.each_context(request),
        "title": title,
        "opts": model_admin.model._meta,
        "intro": intro,
        "lines": list(lines),
        "pks": list(pks),
        "form": form,
        "action": action,
        "submit": submit,
        "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
    }
    request.current_app = model_admin.admin_site.name
    return TemplateResponse(request, "admin/confirm_with_reason.html", context)
