"""URLs of the encryption app (mounted at the site root)."""

from __future__ import annotations

from django.urls import path

from . import key_views, views

app_name = "encryption"

urlpatterns = [
    path("encryption", views.index, name="index"),
    path("encryption/register/<str:cloud>", views.register, name="register"),
    path("encryption/keys/<int:pk>/status", views.key_status, name="key_status"),
    path("encryption/keys/<int:pk>", key_views.detail, name="key"),
    path("encryption/keys/<int:pk>/disable", key_views.disable, name="disable"),
    path("encryption/keys/<int:pk>/enable", key_views.enable, name="enable"),
    path("encryption/keys/<int:pk>/activate", key_views.activate, name="activate"),
    path("encryption/keys/<int:pk>/retry", key_views.retry_verification, name="retry_key"),
    path("encryption/keys/<int:pk>/remove", key_views.remove, name="remove"),
    path("encryption/retry", views.retry, name="retry"),
    path("encryption/rewrap", views.rewrap_start, name="rewrap_start"),
    path("encryption/rewrap/<int:pk>", views.rewrap_progress, name="rewrap_progress"),
    path("encryption/rewrap/<int:pk>/pause", views.rewrap_pause, name="rewrap_pause"),
    path("encryption/rewrap/<int:pk>/resume", views.rewrap_resume, name="rewrap_resume"),
    path("encryption/rewrap/<int:pk>/cancel", views.rewrap_cancel, name="rewrap_cancel"),
]
