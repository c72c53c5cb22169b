"""Support's admin site, composed once: each model is registered here or in its own app's ``admin.py``, never
registered, unregistered and registered again.

``Tenant`` is registered here because its admin combines two apps: the tenants app's ``TenantAdmin`` (search,
filters, memberships, the cloud-KMS switch) and the encryption app's key inline and probe re-run action
(``TenantWithKeysAdmin``). ``tenants`` imports none of the other apps, and the project package may import
them all. The admin's autodiscovery imports this module because ``kodori`` is an installed app.
"""

from __future__ import annotations

from django.contrib import admin

from encryption.admin import TenantWithKeysAdmin
from offboarding.admin import TenantOffboardingActions
from tenants.models import Tenant

admin.site.site_header = "Kodori support"
admin.site.site_title = "Kodori support"
admin.site.index_title = "Tenants and keys"


class KodoriTenantAdmin(TenantOffboardingActions, TenantWithKeysAdmin):
    """The tenant list with every app's actions: offboarding's (schedule / cancel deletion) added."""

    actions = [*TenantWithKeysAdmin.actions, *TenantOffboardingActions.actions]  # type: ignore[assignment]
    list_display = [*TenantWithKeysAdmin.list_display, "state"]
    list_filter = [*TenantWithKeysAdmin.list_filter, "state"]


admin.site.register(Tenant, KodoriTenantAdmin)
