"""Kodori's URL map: app pages at the root, Django auth under /accounts/, support's admin at /admin/.

Errors answer through kodori/errors.py: JSON on ``/api/`` routes (any ``/api/`` URL no route matches is a
JSON 404, in every environment), Kodori's own pages elsewhere.
"""

from __future__ import annotations

from django.contrib import admin
from django.urls import include, path, re_path

from kodori import errors, health
from tenants import views as tenant_views

urlpatterns = [
    path("", tenant_views.home, name="home"),
    path("healthz", health.healthz, name="healthz"),
    path("accounts/", include("django.contrib.auth.urls")),
    path("admin/", admin.site.urls),
    path("guides/", include("kodori.guides.urls")),
    path("", include("tenants.urls")),
    path("", include("audit.urls")),
    path("", include("blobs.urls")),
    path("", include("encryption.urls")),
    path("", include("offboarding.urls")),
    # Last: whatever /api/ URL nothing above matched.
    re_path(r"^api(?:/|$)", errors.api_not_found),
]

handler400 = "kodori.errors.bad_request"
handler403 = "kodori.errors.permission_denied"
handler404 = "kodori.errors.page_not_found"
handler500 = "kodori.errors.server_error"
