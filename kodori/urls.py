"""Kodori's URL map: app pages at the root, Django auth under /accounts/, support's admin at /admin/."""

from __future__ import annotations

from django.contrib import admin
from django.urls import include, path

from kodori import health
from tenants import views as tenant_views

urlpatterns = [
    path("", tenant_views.home, name="home"),
    path("healthz", health.healthz, name="healthz"),
    path("accounts/", include("django.contrib.auth.urls")),
    path("admin/", admin.site.urls),
    path("", include("tenants.urls")),
    path("", include("audit.urls")),
    path("", include("blobs.urls")),
    path("", include("encryption.urls")),
]
