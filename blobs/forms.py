"""Forms of the blobs pages: the list's search and sort (in the URL), and naming a new API token."""

from __future__ import annotations

from django import forms

from .listing import DEFAULT_SORT, SORTS, Sort

SORT_LABELS = {"name": "Name", "size": "Size", "created": "Uploaded"}


class BlobListForm(forms.Form):
    """``?q=report&sort=-size&after=<cursor>``: everything the list shows is in its URL (``listing``)."""

    q = forms.CharField(required=False, max_length=200, label="Search by name")
    sort = forms.ChoiceField(required=False, choices=[(key, key) for key in SORTS])

    def sort_order(self) -> Sort:
        return SORTS.get(self.sort_key(), DEFAULT_SORT)

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
