"""Tenants, memberships and roles: who belongs where and may do what. Imports none of Kodori's other apps."""
