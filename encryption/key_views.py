"""One registered key: its page (full identifier, access settings, what it protects, what can be done next)
and the lifecycle transitions an owner or admin starts from it: disable, re-enable, make active, retry and
remove. Each button is shown only when ``lifecycle.actions`` allows it, and each view goes through the
service, which checks the transition again under the key's row lock."""

from __future__ import annotations

from collections.abc import Callable

from django.conf import settings
from django.contrib import messages
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from tenants.access import MANAGERS, TenantRequest, tenant_required

from . import lifecycle, services
from .coverage import coverage_of
from .forms import DisableKeyForm
from .models import KeyStatus, TenantKey


def _key(request: TenantRequest, pk: int) -> TenantKey:
    return get_object_or_404(
        TenantKey.objects.for_tenant(request.tenant).select_related("registered_by"), pk=pk
    )


@require_GET
@tenant_required(*MANAGERS)
def detail(request: TenantRequest, pk: int) -> HttpResponse:
    key = _key(request, pk)
    config = key.config or {}
    ctx = {
        "key": key,
        "row": coverage_of(key),
        "role_arn": config.get("role_arn", ""),
        "region": config.get("region", ""),
        "external_id": config.get("external_id", ""),
        "directory_id": config.get("directory_id", ""),
        "aws_principal": settings.KODORI_AWS_PRINCIPAL_ARN,
        "gcp_principal": settings.KODORI_GCP_PRINCIPAL,
        "azure_client_id": settings.KODORI_AZURE_CLIENT_ID,
    }
    return render(request, "encryption/key.html", ctx)


@require_http_methods(["GET", "POST"])
@tenant_required(*MANAGERS)
def disable(request: TenantRequest, pk: int) -> HttpResponse:
    key = _key(request, pk)
    if not lifecycle.allowed(key.status, lifecycle.Transition.DISABLE):
        messages.info(request, f"{key.label} cannot be disabled. {lifecycle.refusal(key.status)}")
        return redirect("encryption:key", pk=key.pk)
    form = DisableKeyForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        if key.status == KeyStatus.ACTIVE and form.cleaned_data["confirm"] != request.tenant.slug:
            form.add_error(
                "confirm", f"Type {request.tenant.slug} to confirm that the tenant will be sealed."
            )
        else:
            try:
                services.disable_key(key, actor=request.user, request=request)
            except services.KeyCustodyError as exc:
                messages.error(request, str(exc))
            else:
                messages.success(
                    request, f"{key.label} disabled. You can re-enable it from the key history at any time."
                )
            return redirect("encryption:index")
    status = 400 if request.method == "POST" else 200
    return render(request, "encryption/disable.html", {"key": key, "form": form}, status=status)


def _transition(
    request: TenantRequest,
    pk: int,
    act: Callable[[TenantKey], TenantKey],
    done: Callable[[TenantKey], str],
) -> HttpResponse:
    """Run one custody verb on the key and say how it ended (the service's refusal, or ``done``)."""
    try:
        key = act(_key(request, pk))
    except services.KeyCustodyError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, done(key))
    return redirect("encryption:index")


def _re_enabled(key: TenantKey) -> str:
    if key.status == KeyStatus.ACTIVE:
        return (
            f"{key.label} re-enabled and verified: it is the active key again and your files are available."
        )
    return f"{key.label} re-enabled and verified: it is retired, and the files it protects can be read again."


@require_POST
@tenant_required(*MANAGERS)
def enable(request: TenantRequest, pk: int) -> HttpResponse:
    """Re-enable a disabled key, after probing it (it becomes active or retired, as appropriate)."""
    return _transition(
        request, pk, lambda key: services.re_enable_key(key, actor=request.user, request=request), _re_enabled
    )


@require_POST
@tenant_required(*MANAGERS)
def activate(request: TenantRequest, pk: int) -> HttpResponse:
    """Make a retired key the active key again, after probing it."""
    return _transition(
        request,
        pk,
        lambda key: services.make_active(key, actor=request.user),
        lambda key: f"{key.label} verified and made the active key again; new files are wrapped under it.",
    )


@require_POST
@tenant_required(*MANAGERS)
def retry_verification(request: TenantRequest, pk: int) -> HttpResponse:
    """Verify a failed registration again, after the customer fixed access in their KMS."""
    return _transition(
        request,
        pk,
        lambda key: services.retry_key(key, actor=request.user),
        lambda key: f"Kodori is verifying {key.label} again now.",
    )


@require_http_methods(["GET", "POST"])
@tenant_required(*MANAGERS)
def remove(request: TenantRequest, pk: int) -> HttpResponse:
    """Remove a registration that never verified (it protects nothing), after confirming."""
    key = _key(request, pk)
    if not lifecycle.allowed(key.status, lifecycle.Transition.REMOVE):
        messages.error(
            request,
            f"Only a registration that failed verification can be removed. {lifecycle.refusal(key.status)}",
        )
        return redirect("encryption:key", pk=key.pk)
    if request.method == "POST":
        try:
            services.remove_key(key, actor=request.user, request=request)
        except services.KeyCustodyError as exc:
            messages.error(request, str(exc))
        else:
            messages.success(request, f"The failed registration of {key.label} was removed.")
        return redirect("encryption:index")
    return render(request, "encryption/remove.html", {"key": key})
