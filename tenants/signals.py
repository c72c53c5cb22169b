"""Signals that tenants sends so other apps can act on what happened: the audit log records each one, and
blobs revokes a removed member's API tokens.

``tenants`` imports none of Kodori's other apps; it announces its changes here instead. Every signal is sent
inside the transaction of the change, so a receiver's writes commit or roll back with it.
"""

from __future__ import annotations

from django.dispatch import Signal

# kwargs: tenant, actor, membership, created_account (bool)
membership_added = Signal()
# kwargs: tenant, actor, membership, previous_role
membership_role_changed = Signal()
# kwargs: tenant, actor, user_id, email, role (receivers: audit records it, blobs revokes the user's tokens)
membership_removed = Signal()
# kwargs: tenant, actor, enabled, reason
cloud_kms_switched = Signal()
