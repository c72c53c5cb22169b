"""URLs of the blobs app (mounted at the root): pages under /blobs and /api-tokens, the API under /api/v1."""

from __future__ import annotations

from django.urls import path

from . import api, token_views, views

app_name = "blobs"

urlpatterns = [
    path("blobs", views.blob_list, name="list"),
    path("blobs/upload", views.upload, name="upload"),
    path("blobs/<uuid:pk>", views.detail, name="detail"),
    path("blobs/<uuid:pk>/download", views.download, name="download"),
    path("blobs/<uuid:pk>/delete", views.delete, name="delete"),
    path("api-tokens", token_views.tokens, name="tokens"),
    path("api-tokens/<int:pk>/revoke", token_views.token_revoke, name="token_revoke"),
    path("api/v1/blobs", api.blobs, name="api_blobs"),
    path("api/v1/blobs/<str:blob_id>", api.blob, name="api_blob"),
    path("api/v1/openapi.json", api.openapi, name="api_openapi"),
]
