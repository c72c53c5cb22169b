"""Forms of the offboarding pages."""

from __future__ import annotations

from typing import Any

from django import forms

from tenants.models import Tenant

from .models import ExportFormat
from .services import DEFAULT_DAYS, MAX_DAYS, MIN_DAYS


class ScheduleDeletionForm(forms.Form):
    """An owner's confirmation: the tenant's name typed out, the waiting period, and their password again."""

    days = forms.IntegerField(
        label="Waiting period (days)",
        min_value=MIN_DAYS,
        max_value=MAX_DAYS,
        initial=DEFAULT_DAYS,
        help_text=(
            f"{MIN_DAYS} to {MAX_DAYS} days. Until then the tenant is read-only and any owner can cancel."
        ),
    )
    confirm_name = forms.CharField(label="Tenant name", max_length=200)
    password = forms.CharField(
        label="Your password", widget=forms.PasswordInput(attrs={"autocomplete": "current-password"})
    )

    def __init__(self, *args: Any, tenant: Tenant, user: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.tenant = tenant
        self.fields["confirm_name"].help_text = f"Type {tenant.name} to confirm."
        self.user = user

    def clean_confirm_name(self) -> str:
        typed = self.cleaned_data["confirm_name"].strip()
        if typed != self.tenant.name:
            raise forms.ValidationError(f"That is not the tenant's name. Type {self.tenant.name} exactly.")
        return typed

    def clean_password(self) -> str:
        password = self.cleaned_data["password"]
        if not self.user.check_password(password):
            raise forms.ValidationError("That is not your password. Enter it again to confirm it is you.")
        return ""  # never kept beyond this check


class ExportForm(forms.Form):
    format = forms.ChoiceField(
        label="Archive format",
        choices=[
            (ExportFormat.ZIP, "zip (opens everywhere)"),
            (ExportFormat.TAR, "tar (for Linux and scripts)"),
        ],
        initial=ExportFormat.ZIP,
        widget=forms.RadioSelect,
    )
