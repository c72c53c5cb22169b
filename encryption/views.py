"""The /encryption pages: the current key and its history, registering a key per cloud, following its
verification live, disabling a key, retrying a sealed tenant's key now, and the re-wrap walk (start, follow
live, pause, resume, cancel) with the coverage of each key version. Owners and admins only."""

from __future__ import annotations

import re

from django.conf import settings
from django.contrib import messages
from django.http import Http404, HttpResponse, QueryDict
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from tenants.access import MANAGERS, TenantRequest, tenant_required

from . import rewrap, services, snippets
from .coverage import version_coverage
from .credentials import StaticCredentialRefused, redact_static_credentials, refuse_static_credentials
from .forms import FORMS, KeyForm
from .history import history_page, refusing
from .identifiers import InvalidKeyIdentifier
from .keyring import cache_ttl
from .models import KeyStatus, RewrapJob, RewrapStatus, TenantKey, WrapMethod
from .sealing import Trigger
from .walk_summary import summarize

# What registering told the owner, by what it did (``services.register_key``).
_REGISTERED = {
    "registered": "{key} registered; Kodori is verifying it now.",
    "retrying": "You had registered {key} before and it failed verification; Kodori is verifying it "
    "again now, with the settings you just gave.",
    "made-active": "{key} was already registered (retired). Kodori verified it and made it the active key "
    "again.",
    "re-enabled": "{key} was already registered and disabled. Kodori verified it and re-enabled it; it is "
    "now {status}.",
}


@require_GET
@tenant_required(*MANAGERS)
def index(request: TenantRequest) -> HttpResponse:
    tenant = request.tenant
    history = history_page(tenant, request.GET)
    keys = TenantKey.objects.for_tenant(tenant)
    versions = version_coverage(tenant)
    active = keys.filter(status=KeyStatus.ACTIVE).first()
    # Before the first upload a tenant has no key at all and gets the Kodori-managed one on first use; a
    # tenant that had keys and has no active one is sealed, and the page says so rather than naming a method.
    method = WrapMethod(active.wrap_method) if active else WrapMethod.GLOBAL
    # A key version exists only once a key was active: without one (a first key still pending, say) the
    # tenant uploads under the Kodori-managed key it gets on first use, and is not sealed.
    keyless = active is None and bool(versions)
    job = RewrapJob.objects.for_tenant(tenant).select_related("started_by", "target_tkv__kek").first()
    movable = sum(v.movable for v in versions)
    unused = sum(1 for v in versions if v.unused)
    ctx = {
        "history": history,
        "versions": versions,
        "job": job,
        "summary": summarize(job) if job else None,
        "on_index": True,
        "movable": movable,
        "unused_versions": unused,
        # Data keys under a key an owner disabled: Kodori never opens them again, so no walk moves them.
        "stranded": sum(v.data_keys for v in versions if not v.tkv.kek.usable),
        # The service's own rule, so the button shows exactly when starting would not be refused.
        "can_rewrap": rewrap.rewrap_refusal(tenant, versions) is None,
        "rewrap_after_rotation": settings.KODORI_REWRAP_AFTER_ROTATION,
        "active": active,
        "keyless": keyless,
        "re_enable_candidates": list(keys.filter(status=KeyStatus.DISABLED).order_by("-pk")),
        "refused": refusing(tenant),
        "method": method,
        "mode": "customer"
        if method.is_customer
        else ("kodori" if method == WrapMethod.GLOBAL else "operator"),
        "cache_ttl": int(cache_ttl(method)),
        "support_email": settings.SUPPORT_EMAIL,
    }
    return render(request, "encryption/index.html", ctx)


@require_http_methods(["GET", "POST"])
@tenant_required(*MANAGERS)
def register(request: TenantRequest, cloud: str) -> HttpResponse:
    form_class = FORMS.get(cloud)
    if form_class is None:
        raise Http404("No such cloud.")
    tenant = request.tenant
    form = form_class(request.POST or None)
    if request.method == "POST":
        refusal: Exception | None = None
        try:
            # First, before the form's own checks: a credential is refused whatever else is wrong.
            submitted = request.POST.copy()
            submitted.pop("csrfmiddlewaretoken", None)
            refuse_static_credentials(submitted)
            if form.is_valid():
                key, outcome = services.register_or_restore(
                    tenant, form.method, form.cleaned_data["key_id"], form.config(), actor=request.user
                )
                messages.info(
                    request, _REGISTERED[outcome].format(key=key.label, status=key.get_status_display())
                )
                return redirect("encryption:index")
        except (InvalidKeyIdentifier, StaticCredentialRefused, services.KeyCustodyError) as exc:
            refusal = exc
        form = _shown_again(form_class, request.POST, refusal)
    ctx = {
        "form": form,
        "cloud": cloud,
        **snippets.register_context(cloud, tenant, form),
        "support_email": settings.SUPPORT_EMAIL,
    }
    return render(request, "encryption/register.html", ctx, status=400 if request.method == "POST" else 200)


_CLEARED = "Cleared: Kodori never keeps or shows static credentials. Give the identifier asked for here."


def _shown_again(form_class: type[KeyForm], data: QueryDict, refusal: Exception | None) -> KeyForm:
    """The refused form, to show again: what was typed stays, but a field that held a static credential (one
    the refusal names, or any value shaped like one) comes back empty, so the page never echoes it."""
    refused = refusal.fields if isinstance(refusal, StaticCredentialRefused) else ()
    named = {re.split(r"[.\[]", field, maxsplit=1)[0] for field in refused}
    kept = data.copy()
    cleared = []
    for name in form_class.base_fields:
        value = data.get(name, "")
        if "" in named or name in named or redact_static_credentials(value) != value:
            kept[name] = ""
            cleared.append(name)
    form = form_class(kept)
    form.is_valid()
    for name in cleared:
        form.errors[name] = form.error_class([_CLEARED])
    if refusal is not None:
        form.add_error(None, str(refusal))
    return form


@require_GET
@tenant_required(*MANAGERS)
def key_status(request: TenantRequest, pk: int) -> HttpResponse:
    """The status cell of one key; htmx polls it while the key is pending.

    Once a polled key is settled, the whole page reloads: an activation also changes the current key and
    retires the previous one, which other parts of the page show.
    """
    key = get_object_or_404(TenantKey.objects.for_tenant(request.tenant), pk=pk)
    response = render(request, "encryption/_key_status.html", {"key": key})
    if request.headers.get("HX-Request") and key.status != KeyStatus.PENDING:
        response["HX-Refresh"] = "true"
    return response


@require_POST
@tenant_required(*MANAGERS)
def retry(request: TenantRequest) -> HttpResponse:
    """Probe the active key now: a sealed tenant whose key answers again is unsealed at once."""
    active_works = services.reverify_tenant(request.tenant, actor=request.user, trigger=Trigger.OWNER_RETRY)
    refusing = TenantKey.objects.for_tenant(request.tenant).filter(
        status=KeyStatus.RETIRED, refused_at__isnull=False
    )
    if active_works and refusing:
        names = ", ".join(key.label for key in refusing)
        messages.warning(
            request,
            f"Your active key answered, but {names} still refuses Kodori: the files it protects stay "
            "unreadable until you restore Kodori's access to it in your KMS.",
        )
    elif active_works:
        messages.success(request, "Your key answered: files are available.")
    else:
        request.tenant.refresh_from_db()
        reason = request.tenant.seal_reason
        if not TenantKey.objects.for_tenant(request.tenant).filter(status=KeyStatus.ACTIVE).exists():
            reason = "There is no active key: re-enable a disabled key or register and verify another one."
        messages.error(request, f"Your key still does not answer. {reason}".strip())
    return redirect("encryption:index")


# --- The re-wrap walk ---------------------------------------------------------------------------------------


@require_POST
@tenant_required(*MANAGERS)
def rewrap_start(request: TenantRequest) -> HttpResponse:
    try:
        job = rewrap.start_rewrap(request.tenant, actor=request.user, request=request)
    except rewrap.RewrapError as exc:
        messages.error(request, str(exc))
    else:
        assert job is not None
        messages.success(
            request, f"Re-wrap started: {job.total:,} data keys to move to the active key version."
        )
    return redirect(reverse("encryption:index") + "#rewrap")


@require_GET
@tenant_required(*MANAGERS)
def rewrap_progress(request: TenantRequest, pk: int) -> HttpResponse:
    """The re-wrap card; htmx polls it while the job runs, and reloads the page once it has stopped (the
    key history and the coverage changed with it). Opened as a link (the key history's, say), the walk's own
    page: the card with its summary, and the way back to the rotation."""
    jobs = RewrapJob.objects.for_tenant(request.tenant).select_related("started_by", "target_tkv__kek")
    job = get_object_or_404(jobs, pk=pk)
    ctx = {"job": job, "summary": summarize(job)}
    if not request.headers.get("HX-Request"):
        return render(request, "encryption/rewrap.html", ctx)
    response = render(request, "encryption/_rewrap.html", ctx)
    if job.status != RewrapStatus.RUNNING:
        response["HX-Refresh"] = "true"
    return response


def _control(request: TenantRequest, pk: int, verb: str) -> HttpResponse:
    job = get_object_or_404(RewrapJob.objects.for_tenant(request.tenant), pk=pk)
    action = {"pause": rewrap.pause_rewrap, "resume": rewrap.resume_rewrap, "cancel": rewrap.cancel_rewrap}[
        verb
    ]
    try:
        job = action(job, actor=request.user, request=request)
    except rewrap.RewrapError as exc:
        messages.error(request, str(exc))
    else:
        done = {"pause": "paused", "resume": "resumed", "cancel": "cancelled"}[verb]
        messages.success(request, f"Re-wrap {done} at {job.done:,} of {job.total:,} data keys.")
    return redirect(reverse("encryption:index") + "#rewrap")


@require_POST
@tenant_required(*MANAGERS)
def rewrap_pause(request: TenantRequest, pk: int) -> HttpResponse:
    return _control(request, pk, "pause")


@require_POST
@tenant_required(*MANAGERS)
def rewrap_resume(request: TenantRequest, pk: int) -> HttpResponse:
    return _control(request, pk, "resume")


@require_POST
@tenant_required(*MANAGERS)
def rewrap_cancel(request: TenantRequest, pk: int) -> HttpResponse:
    return _control(request, pk, "cancel")
