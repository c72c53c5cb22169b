"""URLs of the audit app (mounted at the site root, like the tenants app): everything under ``/audit``."""

from __future__ import annotations

from django.urls import path

from . import views

app_name = "audit"

urlpatterns = [
    path("audit", views.index, name="index"),
    path("audit/export.csv", views.export_csv, name="export_csv"),
    path("audit/export.jsonl", views.export_jsonl, name="export_jsonl"),
    path("audit/export.zip", views.export_bundle, name="export_bundle"),
    path("audit/verify", views.verify_now, name="verify"),
    path("audit/breaks/<int:pk>/acknowledge", views.acknowledge_break, name="acknowledge_break"),
]
