"""The API tokens page: create a token (its secret is shown once), list and revoke tokens.

Everyone in a tenant may create tokens for themselves; a token can do what its owner's current role allows.
Owners and admins also see, and may revoke, everyone's tokens in the tenant.
"""

from __future__ import annotations

from django.contrib import messages
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_http_methods

from tenants.access import TenantRequest, tenant_required

from . import services
from .forms import TokenForm
from .models import ApiToken


def _tokens_page(
    request: TenantRequest, form: TokenForm, *, secret: str = "", status: int = 200
) -> HttpResponse:
    tokens = ApiToken.objects.for_tenant(request.tenant).select_related("user").order_by("-created_at")
    if not request.membership.role_enum.manages_tenant:
        tokens = tokens.filter(user=request.user)
    ctx = {
        "form": form,
        "tokens": tokens,
        "secret": secret,
        "api_base": request.build_absolute_uri("/api/v1"),
    }
    # Like every page for a signed-in user, never stored by a cache (kodori.middleware.NoStoreMiddleware).
    return render(request, "blobs/tokens.html", ctx, status=status)


@require_http_methods(["GET", "POST"])
@tenant_required()
def tokens(request: TenantRequest) -> HttpResponse:
    if request.method == "GET":
        return _tokens_page(request, TokenForm())
    form = TokenForm(request.POST)
    if not form.is_valid():
        return _tokens_page(request, form, status=400)
    _token, secret = services.create_token(
        request.tenant, request.user, form.cleaned_data["name"], request=request
    )
    return _tokens_page(request, TokenForm(), secret=secret)


@require_http_methods(["GET", "POST"])
@tenant_required()
def token_revoke(request: TenantRequest, pk: int) -> HttpResponse:
    token = get_object_or_404(ApiToken.objects.for_tenant(request.tenant).select_related("user"), pk=pk)
    if not services.can_revoke(request.membership, token):
        return render(request, "403.html", status=403)
    if request.method == "GET":
        return render(request, "blobs/token_revoke.html", {"token": token})
    if services.revoke_token(token, actor=request.user, request=request):
        messages.success(
            request, f"Revoked the token “{token.name}”. Programs using it are refused from now on."
        )
    return redirect("blobs:tokens")
