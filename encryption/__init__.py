"""Envelope encryption: blob format, tenant key hierarchy and key providers. Never imports ``blobs``."""
