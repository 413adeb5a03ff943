"""`ROUTES`: every route's description, by the name it is registered under (`add_route`
in gateway/http/auth.py), and the parameters and headers several routes share."""

from __future__ import annotations

import dataclasses
from typing import Any

from gateway.apps.models import AppDefinition
from gateway.data.models import TransferRequest
from gateway.fields import PATH_MAX_CHARS, PATH_PATTERN
from gateway.http.openapi.route_doc import INT_HEADER, Param, RouteDoc
from gateway.http.params import BOOLEAN_PATTERN, CURSOR_PATTERN, STATES_PATTERN
from gateway.http.routes.files import MkdirRequest, RenameRequest
from gateway.http.routes.tokens import TokenRequest
from gateway.http.routes.usage import GROUP_BY_PATTERN, TIME_PATTERN
from gateway.jobs.models import JobBatch, JobSpec
from gateway.jobs.usage import GROUPS
from gateway.tes.models import TES_STATES, TesTask

_TIME_DESCRIPTION = (
    "a date (2026-12-01) or a date and time, with an offset or Z (UTC without one): "
    "2026-12-01T08:00, 2026-12-01T08:00:00.5+05:30"
)
_ID = "the gateway's id of the job (a UUID)"
_CENTER = "a center id, as in GET /v1/centers"
_PATH = Param(
    "path",
    description="a path at the center, confined to the caller's roots",
    pattern=PATH_PATTERN,
    max_length=PATH_MAX_CHARS,
)
_PATH_REQUIRED = dataclasses.replace(_PATH, required=True)
_LIMIT = Param("limit", "integer", "at most this many", minimum=1, maximum=1000)
_SHA256 = Param(
    "X-Checksum-Sha256",
    where="header",
    description="64 hex digits; checked after the write",
    pattern=r"^[ \t]*[0-9a-fA-F]{64}[ \t]*$",
)


def _flag(name: str, description: str) -> Param:
    return Param(name, description=f"{description}; true or false", pattern=BOOLEAN_PATTERN)


_EVENT_ID_PATTERN = r"^[ \t]*[0-9]{0,19}[ \t]*$"
_LAST_EVENT_ID = Param(
    "Last-Event-ID",
    where="header",
    description=(
        "the id of the last event the client saw: the stream first replays what it "
        "missed after it (each job's newest record); one older than the gateway keeps "
        "gets the current record (job stream) or an `event: resync` (user stream)"
    ),
    pattern=_EVENT_ID_PATTERN,
)
_LAST_EVENT_ID_QUERY = Param(
    "last_event_id",
    description="as the Last-Event-ID header, for clients that cannot set it; the header wins",
    pattern=_EVENT_ID_PATTERN,
)


def _idempotency_key(meaning: str) -> Param:
    return Param(
        "Idempotency-Key",
        where="header",
        description=f"1-200 printable ASCII characters; {meaning}",
        pattern=r"^[\x21-\x7e]{1,200}$",
    )


_FILE_HEADERS: dict[str, tuple[bool, dict[str, Any]]] = {
    "Accept-Ranges": (True, {"type": "string", "enum": ["bytes"]}),
    "X-File-Size": (True, INT_HEADER),
    "Last-Modified": (True, {"type": "string"}),
}
_RANGE_HEADERS = {
    **_FILE_HEADERS,
    "Content-Range": (True, {"type": "string", "pattern": r"^bytes [0-9]+-[0-9]+/[0-9]+$"}),
}
_UNSATISFIABLE_HEADERS: dict[str, tuple[bool, dict[str, Any]]] = {
    "Content-Range": (True, {"type": "string", "pattern": r"^bytes \*/[0-9]+$"}),
    "Accept-Ranges": (True, {"type": "string", "enum": ["bytes"]}),
}
_RANGE = Param(
    "Range",
    where="header",
    description="one range: bytes=START-, bytes=START-END or bytes=-SUFFIX",
    pattern=r"^[ \t]*bytes=([0-9]{1,19}-[0-9]{0,19}|-[0-9]{1,19})[ \t]*$",
)

_TES_VIEW = Param(
    "view", description="MINIMAL (id, state), BASIC or FULL", enum=("MINIMAL", "BASIC", "FULL")
)

#: Route name -> its description. Every route registered with add_route has one.
ROUTES: dict[str, RouteDoc] = {
    "healthz": RouteDoc("Liveness: the process answers"),
    "readyz": RouteDoc("Readiness: the store answers", responses={200: "ready", 503: "not ready"}),
    "health": RouteDoc("Federation health: every center's probes and breaker state"),
    "auth.jwks": RouteDoc("Public keys that verify this gateway's tokens (JWKS)"),
    "openapi": RouteDoc("This OpenAPI document"),
    "jobs.submit": RouteDoc(
        "Submit a job",
        params=(_idempotency_key("a repeat returns the same job"),),
        body=JobSpec,
        responses={
            200: "the job of this Idempotency-Key, submitted before",
            201: "submitted to its center",
            202: "stored; the center's answer is pending",
        },
        errors=(404,),
        at_center=True,
    ),
    "jobs.batch": RouteDoc(
        "Submit independent jobs at once (up to 1000)",
        params=(_idempotency_key("job i gets the key <key>#<i>"),),
        body=JobBatch,
        responses={
            201: "every job submitted to its center",
            207: "each job's own status, record or error in `results`",
        },
        errors=(404,),
        at_center=True,
    ),
    "jobs.list": RouteDoc(
        "List jobs (cursor pagination)",
        params=(
            Param(
                "state",
                description="comma-separated job states, in any letter case",
                pattern=STATES_PATTERN,
            ),
            Param("center", description=_CENTER),
            _LIMIT,
            Param(
                "cursor",
                description="next_cursor of the previous page; any other value is 400",
                pattern=CURSOR_PATTERN,
            ),
        ),
    ),
    "jobs.get": RouteDoc("A job's record", path_params={"id": _ID}),
    "jobs.cancel": RouteDoc(
        "Cancel a job",
        path_params={"id": _ID},
        responses={200: "the job has ended", 202: "cancel requested"},
        at_center=True,
    ),
    "jobs.output": RouteDoc(
        "A job's stdout or stderr, from an offset; `follow` streams until the job ends",
        path_params={"id": _ID, "stream": "stdout or stderr"},
        params=(
            Param("offset", "integer", "first byte", minimum=0, maximum=1 << 62),
            Param("limit", "integer", "at most this many bytes", minimum=1, maximum=4 << 20),
            _flag("follow", "keep streaming until the job has ended"),
            Param("element", "integer", "array element index", minimum=0, maximum=1 << 31),
        ),
        responses={200: "bytes"},
        media={200: "application/octet-stream"},
        at_center=True,
    ),
    "jobs.upload_input": RouteDoc(
        "Upload an `upload: true` input of a job (streamed)",
        path_params={"id": _ID, "index": "index in the spec's inputs (ASCII digits)"},
        params=(_SHA256,),
        body="binary",
        errors=(409, 422),
        at_center=True,
    ),
    "jobs.events": RouteDoc(
        "A job's state changes (server-sent events) until it ends",
        path_params={"id": _ID},
        params=(_LAST_EVENT_ID, _LAST_EVENT_ID_QUERY),
        errors=(400,),
        responses={200: "events"},
        media={200: "text/event-stream"},
    ),
    "events.list": RouteDoc(
        "State changes of the caller's jobs (server-sent events)",
        params=(_LAST_EVENT_ID, _LAST_EVENT_ID_QUERY),
        errors=(400,),
        responses={200: "events"},
        media={200: "text/event-stream"},
    ),
    "centers.list": RouteDoc("The configured centers and their admission"),
    "centers.get": RouteDoc("One center and its admission", path_params={"center": _CENTER}),
    "centers.computing_power": RouteDoc(
        "The center's computing-power descriptor",
        path_params={"center": _CENTER},
        params=(_flag("refresh", "ask the scheduler now, not the cache"),),
        at_center=True,
    ),
    "usage.read": RouteDoc(
        "Core-hours, GPU-hours and cost of finished jobs",
        params=(
            Param("user", description="whose usage (researchers: only their own)"),
            Param("center", description=_CENTER),
            Param("since", description=_TIME_DESCRIPTION, pattern=TIME_PATTERN),
            Param("until", description=_TIME_DESCRIPTION, pattern=TIME_PATTERN),
            Param(
                "group_by",
                description="comma-separated, each at most once: " + ", ".join(GROUPS),
                pattern=GROUP_BY_PATTERN,
            ),
            _flag("jobs", "list the jobs too"),
        ),
        errors=(404,),
    ),
    "tokens.issue": RouteDoc(
        "Issue a token (admins)", body=TokenRequest, responses={201: "the token"}
    ),
    "files.roots": RouteDoc(
        "The caller's roots and login at a center",
        path_params={"center": _CENTER},
        at_center=True,
    ),
    "files.list": RouteDoc(
        "List a directory",
        path_params={"center": _CENTER},
        params=(_PATH,),
        errors=(409,),
        at_center=True,
    ),
    "files.stat": RouteDoc(
        "Stat a path", path_params={"center": _CENTER}, params=(_PATH_REQUIRED,), at_center=True
    ),
    "files.checksum": RouteDoc(
        "sha256 of a file, computed at the center",
        path_params={"center": _CENTER},
        params=(_PATH_REQUIRED,),
        errors=(409,),
        at_center=True,
    ),
    "files.download": RouteDoc(
        "Download a file (streamed; one Range)",
        path_params={"center": _CENTER},
        params=(_PATH_REQUIRED, _RANGE),
        responses={200: "the file", 206: "the range"},
        errors=(409, 416),
        headers={200: _FILE_HEADERS, 206: _RANGE_HEADERS, 416: _UNSATISFIABLE_HEADERS},
        media={200: "application/octet-stream", 206: "application/octet-stream"},
        at_center=True,
    ),
    "files.head": RouteDoc(
        "A file's size and date",
        path_params={"center": _CENTER},
        params=(_PATH_REQUIRED, _RANGE),
        responses={200: "headers only", 206: "headers of the range"},
        errors=(409, 416),
        headers={200: _FILE_HEADERS, 206: _RANGE_HEADERS, 416: _UNSATISFIABLE_HEADERS},
        at_center=True,
    ),
    "files.upload": RouteDoc(
        "Upload a file (streamed; resume with offset)",
        path_params={"center": _CENTER},
        params=(
            _PATH_REQUIRED,
            Param("offset", "integer", "write from this byte", minimum=0, maximum=1 << 62),
            _flag("overwrite", "replace an existing file (default true)"),
            _SHA256,
        ),
        body="binary",
        responses={200: "written over an existing file", 201: "created"},
        errors=(409, 422),
        at_center=True,
    ),
    "files.mkdir": RouteDoc(
        "Make a directory",
        path_params={"center": _CENTER},
        body=MkdirRequest,
        responses={200: "it existed", 201: "created"},
        errors=(409,),
        at_center=True,
    ),
    "files.rename": RouteDoc(
        "Rename or move a path",
        path_params={"center": _CENTER},
        body=RenameRequest,
        errors=(409,),
        at_center=True,
    ),
    "files.remove": RouteDoc(
        "Remove a path",
        path_params={"center": _CENTER},
        params=(_PATH_REQUIRED, _flag("recursive", "remove a directory's contents")),
        responses={204: "removed"},
        errors=(409,),
        at_center=True,
    ),
    "transfers.create": RouteDoc(
        "Start a transfer between centers",
        body=TransferRequest,
        responses={202: "queued"},
        errors=(404, 409),
        at_center=True,
    ),
    "transfers.list": RouteDoc("The caller's transfers", params=(_LIMIT,)),
    "transfers.get": RouteDoc("One transfer", path_params={"id": "the transfer's id"}),
    "transfers.cancel": RouteDoc("Cancel a transfer", path_params={"id": "the transfer's id"}),
    "apps.list": RouteDoc(
        "The application catalog: each application, its versions and the centers offering "
        "each, with its canary's state",
        params=(Param("center", description="only this center's offers"),),
        errors=(404,),
    ),
    "apps.get": RouteDoc(
        "One application: versions, offers, parameters, outputs, resources, canary",
        path_params={"name": "the application's name"},
        errors=(404,),
    ),
    "apps.put": RouteDoc(
        "Put an application definition (admins)",
        path_params={"name": "the application's name"},
        body=AppDefinition,
        errors=(409, 422),
    ),
    "apps.delete": RouteDoc(
        "Delete an application definition put through the API (admins)",
        path_params={"name": "the application's name"},
        responses={204: "deleted"},
        errors=(404, 409),
    ),
    "tes.service_info": RouteDoc(
        "GA4GH TES: the service's description (service-info), its storage (hpcfed:// "
        "URLs of the centers) and the backend_parameters it takes",
        error_schema="TesError",
    ),
    "tes.service_info_v1_0": RouteDoc(
        "GA4GH TES 1.0's service-info (name, doc, storage), for clients of that version",
        error_schema="TesError",
    ),
    "tes.list": RouteDoc(
        "GA4GH TES: the caller's tasks, newest first",
        params=(
            Param("name_prefix", description="only tasks whose name starts with this"),
            Param("state", description="only tasks in this state", enum=TES_STATES),
            Param(
                "tag_key",
                description="only tasks with this tag (repeat for more, zipped with tag_value)",
            ),
            Param("tag_value", description="the value of the tag_key at the same place"),
            Param("page_size", "integer", "at most this many", minimum=1, maximum=2047),
            Param(
                "page_token",
                description="next_page_token of the previous page; any other value is 400",
                pattern=CURSOR_PATTERN,
            ),
            _TES_VIEW,
        ),
        error_schema="TesError",
    ),
    "tes.create": RouteDoc(
        "GA4GH TES: create a task (one batch job at its center; docs/tes.md)",
        body=TesTask,
        errors=(404, 413, 503),
        at_center=True,
        error_schema="TesError",
    ),
    "tes.get": RouteDoc(
        "GA4GH TES: one task of the caller's",
        path_params={"id": "the task's id"},
        params=(_TES_VIEW,),
        error_schema="TesError",
    ),
    "tes.cancel": RouteDoc(
        "GA4GH TES: cancel a task (its job at its center)",
        path_params={"id": "the task's id"},
        at_center=True,
        error_schema="TesError",
    ),
    "apps.canaries": RouteDoc(
        "Run the canary of every application the center offers; each outcome is kept "
        "with the run's id (GET /v1/apps?center=)",
        path_params={"center": _CENTER},
        responses={202: "started"},
        errors=(404, 409),
    ),
    "evaluations.start": RouteDoc(
        "Start an access evaluation of a center",
        path_params={"center": _CENTER},
        responses={202: "started"},
        errors=(409,),
    ),
    "evaluations.list": RouteDoc(
        "A center's evaluations", path_params={"center": _CENTER}, params=(_LIMIT,)
    ),
    "evaluations.get": RouteDoc(
        "One evaluation and its report",
        path_params={"center": _CENTER, "eid": "the evaluation's id"},
        params=(Param("format", description="json or markdown", enum=("json", "markdown")),),
    ),
    "metrics": RouteDoc(
        "Prometheus metrics",
        responses={200: "the exposition format"},
        media={200: "text/plain"},
    ),
    "dashboard.page": RouteDoc(
        "The operators' dashboard page", responses={200: "the page"}, media={200: "text/html"}
    ),
    "dashboard.file": RouteDoc(
        "A dashboard asset", path_params={"file": "index.html, dashboard.js or dashboard.css"}
    ),
}
