"""Forms of the blobs pages: the list's search and sort (in the URL), and naming a new API token."""

from __future__ import annotations

from django import forms

SORTS = {
    "name": ("name", "id"),
    "-name": ("-name", "-id"),
    "size": ("size", "id"),
    "-size": ("-size", "-id"),
    "created": ("created_at", "id"),
    "-created": ("-created_at", "-id"),
}
SORT_LABELS = {"name": "Name", "size": "Size", "created": "Uploaded"}


class BlobListForm(forms.Form):
    """``?q=report&sort=-size&page=2``: everything the list shows is in its URL."""

    q = forms.CharField(required=False, max_length=200, label="Search by name")
    sort = forms.ChoiceField(required=False, choices=[(key, key) for key in SORTS])

    def ordering(self) -> tuple[str, ...]:
        sort = self.cleaned_data.get("sort") if self.is_valid() else ""
        return SORTS.get(sort or "-created", SORTS["-created"])

    def query(self) -> str:
        return (self.cleaned_data.get("q") or "").strip() if self.is_valid() else ""

    def sort_key(self) -> str:
        return (self.cleaned_data.get("sort") or "-created") if self.is_valid() else "-created"


class TokenForm(forms.Form):
    name = forms.CharField(
        max_length=100,
        label="Token name",
        help_text="What will use it, e.g. “nightly backup”.",
        widget=forms.TextInput(attrs={"autocomplete": "off"}),
    )
