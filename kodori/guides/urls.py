"""URLs of the guides (mounted at ``/guides/``): only names in ``catalogue.GUIDES`` answer, others are 404."""

from __future__ import annotations

from django.urls import path

from . import views

app_name = "guides"

urlpatterns = [
    path("", views.index, name="index"),
    path("<slug:slug>", views.guide, name="guide"),
]
