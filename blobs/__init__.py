"""Tenants' files: streaming encrypted upload, ranged download, storage backends and the API."""
