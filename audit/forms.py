"""The one form of the audit app: the reason an owner gives when acknowledging a chain break."""

from __future__ import annotations

from django import forms


class AcknowledgeForm(forms.Form):
    reason = forms.CharField(
        label="Reason",
        max_length=500,
        error_messages={"required": "Give the reason: it is recorded in the audit log with your name."},
        help_text="What happened and what was done about it, e.g. “restored #4 from the backup of 3 May”.",
    )
