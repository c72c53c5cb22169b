"""Who and where the current request is, for records made deep inside it (audit events from signal receivers).

The project's request id middleware sets these for each request and apps read them here, so no app imports
the project package. Outside a request they hold their defaults.
"""

from __future__ import annotations

from contextvars import ContextVar

# "-" outside a request, so every log line has a request id field.
request_id_var: ContextVar[str] = ContextVar("request_id", default="-")
# The client's address, for records made deep inside a request (audit events from signal receivers).
client_ip_var: ContextVar[str] = ContextVar("client_ip", default="")
