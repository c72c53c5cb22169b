"""``{% key_custody tenant %}``: the tenant's real key custody, for pages outside the encryption app.

The tenants app shows it on the overview without importing the encryption app: templates may load a tag
library of any installed app, so the dependency stays one-way (encryption knows tenants, not the reverse).
"""

from __future__ import annotations

from typing import Any

from django import template

from tenants.models import Tenant

from ..models import KeyStatus, TenantKey

register = template.Library()


@register.inclusion_tag("encryption/_custody_summary.html")
def key_custody(tenant: Tenant) -> dict[str, Any]:
    """The active key (or that there is none), and whether the tenant may bring its own key."""
    keys = TenantKey.objects.for_tenant(tenant)
    return {
        "tenant": tenant,
        "active": keys.filter(status=KeyStatus.ACTIVE).first(),
        "has_keys": keys.exists(),
    }
