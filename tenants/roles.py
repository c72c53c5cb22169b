"""Roles of a tenant's members, in a module of their own so that the querysets and the models both use them
without importing each other."""

from __future__ import annotations

from django.db import models


class Role(models.TextChoices):
    """What a member may do. Ordered from most to least powerful (see ``rank``)."""

    OWNER = "owner", "Owner"
    ADMIN = "admin", "Admin"
    MEMBER = "member", "Member"
    VIEWER = "viewer", "Viewer"

    @property
    def rank(self) -> int:
        """Higher is more powerful: owner 3, admin 2, member 1, viewer 0."""
        return {Role.OWNER: 3, Role.ADMIN: 2, Role.MEMBER: 1, Role.VIEWER: 0}[self]

    @property
    def manages_tenant(self) -> bool:
        """Owners and admins manage members, keys and read the audit log (``tenants.access.MANAGERS``)."""
        return self in (Role.OWNER, Role.ADMIN)

    @property
    def can_upload(self) -> bool:
        """Everyone but viewers uploads files (``tenants.access.UPLOADERS`` for view decorators)."""
        return self != Role.VIEWER
