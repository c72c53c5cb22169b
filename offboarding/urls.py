"""URLs of offboarding (mounted at the root): owner pages under /tenant/deletion and /export, the API, and
/blobs/archive (several files of the list as one zip, for every role: ``offboarding.selection``)."""

from __future__ import annotations

from django.urls import path

from . import api, selection, views

app_name = "offboarding"

urlpatterns = [
    path("tenant/deletion", views.deletion, name="deletion"),
    path("tenant/deletion/schedule", views.schedule, name="schedule"),
    path("tenant/deletion/cancel", views.cancel, name="cancel"),
    path("blobs/archive", selection.download_selected, name="download_selected"),
    path("export", views.export_index, name="export"),
    path("export/<uuid:pk>", views.export_detail, name="export_detail"),
    path("export/<uuid:pk>/parts/<int:number>", views.export_part, name="export_part"),
    path("api/v1/exports", api.export_list, name="api_exports"),
    path("api/v1/exports/<str:export_id>", api.export_status, name="api_export"),
    path("api/v1/exports/<str:export_id>/parts/<int:number>", api.export_part, name="api_export_part"),
    path("api/v1/tenant/deletion", api.deletion_status, name="api_deletion"),
]
