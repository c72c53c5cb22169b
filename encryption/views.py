"""The /encryption page: which key protects the tenant's files, and the history of its keys."""

from __future__ import annotations

from django.conf import settings
from django.http import HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from tenants.access import MANAGERS, TenantRequest, tenant_required

from .coverage import key_coverage
from .keyring import cache_ttl
from .models import KeyStatus, WrapMethod


@require_GET
@tenant_required(*MANAGERS)
def index(request: TenantRequest) -> HttpResponse:
    tenant = request.tenant
    coverage = key_coverage(tenant)
    active = next((c.key for c in coverage if c.key.status == KeyStatus.ACTIVE), None)
    method = WrapMethod(active.wrap_method) if active else WrapMethod.GLOBAL
    ctx = {
        "coverage": coverage,
        "active": active,
        "method": method,
        "mode": "customer"
        if method.is_customer
        else ("kodori" if method == WrapMethod.GLOBAL else "operator"),
        "cache_ttl": int(cache_ttl(method)),
        "support_email": settings.SUPPORT_EMAIL,
        "has_keys": any(c.key.wrap_method != WrapMethod.GLOBAL for c in coverage),
    }
    return render(request, "encryption/index.html", ctx)
