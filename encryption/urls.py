"""URLs of the encryption app (mounted at the site root)."""

from __future__ import annotations

from django.urls import path

from . import views

app_name = "encryption"

urlpatterns = [
    path("encryption", views.index, name="index"),
]
