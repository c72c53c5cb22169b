"""Envelope encryption: the blob format, the tenant key hierarchy and the key providers. Never imports ``blobs``."""
