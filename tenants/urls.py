"""URLs of the tenants app (mounted at the site root)."""

from __future__ import annotations

from django.urls import path

from . import views

app_name = "tenants"

urlpatterns = [
    path("members", views.members, name="members"),
    path("members/add", views.member_add, name="member_add"),
    path("members/<int:pk>/role", views.member_role, name="member_role"),
    path("members/<int:pk>/remove", views.member_remove, name="member_remove"),
    path("tenants/switch", views.switch_tenant, name="switch"),
]
