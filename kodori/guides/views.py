"""``/guides/`` and ``/guides/<name>``: public pages, since the guides hold nothing of any tenant and people
read them before they have an account (an owner preparing a key, an auditor checking evidence)."""

from __future__ import annotations

from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from . import render as rendering
from .catalogue import GROUPS, GUIDES, find


@require_GET
def index(request: HttpRequest) -> HttpResponse:
    groups = [(group, [g for g in GUIDES if g.group == group]) for group in GROUPS]
    return render(request, "guides/index.html", {"groups": groups})


@require_GET
def guide(request: HttpRequest, slug: str) -> HttpResponse:
    found = find(slug)
    if found is None:
        raise Http404("No such guide.")
    page = rendering.render(found)
    others = [g for g in GUIDES if g.group == found.group and g != found]
    return render(request, "guides/guide.html", {"guide": found, "page": page, "others": others})
