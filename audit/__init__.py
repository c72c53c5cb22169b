"""The tamper-evident audit log of key custody and membership changes. Imports only ``tenants``."""
