"""Pages of the tenants app: overview, members, and switching tenant."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_POST

from . import services
from .access import MANAGERS, TenantRequest, tenant_required
from .forms import AddMemberForm, ChangeRoleForm
from .middleware import SESSION_KEY
from .models import Membership, Role


@require_GET
def home(request: HttpRequest) -> HttpResponse:
    # Support staff usually belong to no tenant: their place is the admin.
    if (
        request.user.is_authenticated
        and request.user.is_staff
        and getattr(request, "membership", None) is None
    ):
        return redirect("admin:index")
    return _tenant_home(request)  # type: ignore[arg-type]  # tenant_required checks the attributes


@tenant_required()
def _tenant_home(request: TenantRequest) -> HttpResponse:
    tenant = request.tenant
    ctx = {"member_count": Membership.objects.for_tenant(tenant).count()}
    return render(request, "tenants/home.html", ctx)


def _members_page(
    request: TenantRequest, add_form: AddMemberForm | None = None, status: int = 200
) -> HttpResponse:
    tenant = request.tenant
    actor_role: Role = request.membership.role_enum
    memberships = Membership.objects.for_tenant(tenant).select_related("user").order_by("user__email")
    owners = sum(1 for m in memberships if m.role_enum == Role.OWNER)
    rows = []
    for m in memberships:
        # The last owner can be neither demoted nor removed (services refuse it): offer no control that would.
        last_owner = m.role_enum == Role.OWNER and owners <= 1
        editable = (actor_role == Role.OWNER or m.role_enum != Role.OWNER) and not last_owner
        rows.append(
            {
                "membership": m,
                "editable": editable,
                "last_owner": last_owner,
                "is_self": m.user_id == request.user.pk,
            }
        )
    ctx = {
        "rows": rows,
        "add_form": add_form or AddMemberForm(actor_role=actor_role),
        "role_choices": services.assignable_roles(actor_role),
    }
    return render(request, "tenants/members.html", ctx, status=status)


@require_GET
@tenant_required(*MANAGERS)
def members(request: TenantRequest) -> HttpResponse:
    return _members_page(request)


@require_POST
@tenant_required(*MANAGERS)
def member_add(request: TenantRequest) -> HttpResponse:
    actor_role = request.membership.role_enum
    form = AddMemberForm(request.POST, actor_role=actor_role)
    if form.is_valid():
        try:
            membership = services.add_member(
                request.tenant,
                form.cleaned_data["email"],
                Role(form.cleaned_data["role"]),
                actor=request.user,
                base_url=request.build_absolute_uri("/").rstrip("/"),
            )
        except services.MembershipRuleError as exc:
            form.add_error(None, exc)
        else:
            messages.success(request, f"Added {membership.user.email} as {membership.get_role_display()}.")
            return redirect("tenants:members")
    return _members_page(request, add_form=form, status=400)


@require_POST
@tenant_required(*MANAGERS)
def member_role(request: TenantRequest, pk: int) -> HttpResponse:
    membership = get_object_or_404(Membership.objects.for_tenant(request.tenant), pk=pk)
    form = ChangeRoleForm(request.POST, actor_role=request.membership.role_enum)
    if not form.is_valid():
        messages.error(
            request, "You cannot give that role. " + " ".join(str(e) for e in form.errors.get("role", []))
        )
        return redirect("tenants:members")
    try:
        services.change_role(membership, Role(form.cleaned_data["role"]), actor=request.user)
    except services.MembershipRuleError as exc:
        messages.error(request, " ".join(exc.messages))
    else:
        messages.success(request, f"{membership.user.email} is now {Role(form.cleaned_data['role']).label}.")
    return redirect("tenants:members")


@tenant_required(*MANAGERS)
def member_remove(request: TenantRequest, pk: int) -> HttpResponse:
    membership = get_object_or_404(
        Membership.objects.for_tenant(request.tenant).select_related("user"),
        pk=pk,
    )
    if request.method == "GET":
        return render(request, "tenants/member_remove.html", {"membership": membership})
    if request.method != "POST":
        return HttpResponse(status=405, headers={"Allow": "GET, POST"})
    try:
        services.remove_member(membership, actor=request.user)
    except services.MembershipRuleError as exc:
        messages.error(request, " ".join(exc.messages))
    else:
        messages.success(request, f"Removed {membership.user.email}.")
    if membership.user_id == request.user.pk:
        return redirect("home")
    return redirect("tenants:members")


@require_POST
@login_required
def switch_tenant(request: TenantRequest) -> HttpResponse:
    slug = request.POST.get("tenant", "")
    membership = (
        Membership.objects.filter(user=request.user, tenant__slug=slug).select_related("tenant").first()
    )
    if membership is None:
        raise Http404("No such tenant.")
    request.session[SESSION_KEY] = membership.tenant_id
    messages.info(request, f"Switched to {membership.tenant.name}.")
    return redirect("home")
