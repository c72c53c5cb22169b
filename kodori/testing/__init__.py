"""Test support shipped with the project: the pytest plugin that starts PostgreSQL and Redis."""
