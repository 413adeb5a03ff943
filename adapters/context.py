"""Context the gateway sets for the work it asks of adapters.

Adapters never import gateway code; the gateway sets these variables (the
request being served) and adapters read them, e.g. to log which request an
SSH command belongs to.
"""

from __future__ import annotations

from contextvars import ContextVar

#: The id of the HTTP request being served, None outside a request (the poller).
REQUEST_ID: ContextVar[str | None] = ContextVar("hpcfed_request_id", default=None)
