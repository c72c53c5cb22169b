"""Kodori's URLs plus a few views that fail on purpose, for tests/kodori/test_errors.py (``ROOT_URLCONF``)."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.urls import path
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET

from kodori.urls import handler400, handler403, handler404, handler500
from kodori.urls import urlpatterns as kodori_urlpatterns


class Boom(Exception):
    pass


def boom(request: HttpRequest) -> HttpResponse:
    raise Boom("secret-internal-detail")


def answers_500(request: HttpRequest) -> HttpResponse:
    return HttpResponse("<p>failed</p>", status=500)


@csrf_exempt
def form_fields(request: HttpRequest) -> HttpResponse:
    return HttpResponse(str(len(request.POST)))


@require_GET
def get_only(request: HttpRequest) -> HttpResponse:
    return HttpResponse("<p>only GET</p>")


# Before Kodori's own: the last of those is the API's catch-all.
urlpatterns = [
    path("boom", boom),
    path("answers-500", answers_500),
    path("api/v1/boom", boom),
    path("api/v1/form", form_fields),
    path("api/v1/get-only", get_only),
    *kodori_urlpatterns,
]

__all__ = ["handler400", "handler403", "handler404", "handler500", "urlpatterns"]
