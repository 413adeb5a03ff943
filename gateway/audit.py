"""The audit log: one JSON line per mutating action, from the gateway and the CLI.

Every submit, cancel, upload, delete, token issue and config or vault change is
appended to one file as a JSON object on its own line::

    {"time": "2025-01-02T03:04:05.678Z", "actor": "alice", "roles": ["researcher"],
     "action": "jobs.submit", "target": {"job": "j-1"}, "outcome": "ok",
     "status": 201, "source": "10.0.0.7"}

The gateway and admin commands run in different processes and may write the
same file at once; each line is written with a single ``write(2)`` on a file
opened with ``O_APPEND``, so lines never interleave. Headers, bodies, query
strings and tokens are never recorded.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Awaitable, Callable, Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Final

from aiohttp import web

log = logging.getLogger("hpcfed.audit")

#: A handler sets ``request[AUDIT_TARGET] = {"job": id}`` to name what it acted on
#: beyond the URL (e.g. the id of a job it just created).
AUDIT_TARGET: Final = web.RequestKey("audit_target", dict)

#: Only these change anything; reads are not audited.
MUTATING_METHODS: Final = frozenset({"POST", "PUT", "PATCH", "DELETE"})

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Middleware = Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]
ActorOf = Callable[[web.Request], tuple[str | None, Iterable[str]]]


class AuditError(Exception):
    """An audit line could not be written."""


class AuditLog:
    """Appends audit lines to ``path``; safe across threads and processes."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # 0600: the log names users and what they did. The mode applies when the
        # file is created; an existing file keeps the mode its owner gave it.
        self._fd: int | None = os.open(
            self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600
        )
        # O_APPEND keeps processes apart; the lock keeps this object's threads
        # from racing close() against a write on the same descriptor.
        self._lock = threading.Lock()

    def record(
        self,
        *,
        action: str,
        actor: str | None,
        outcome: str,
        source: str,
        roles: Iterable[str] = (),
        target: Mapping[str, str] | None = None,
        status: int | None = None,
        error: str | None = None,
        **details: object,
    ) -> None:
        """Append one line. Raises AuditError (after logging it) if it cannot."""
        entry: dict[str, object] = {
            "time": _now(),
            "actor": actor,
            "roles": sorted(roles),
            "action": action,
            "target": dict(target) if target is not None else None,
            "outcome": outcome,
            "status": status,
            "error": error,
            "source": source,
        }
        for key, value in details.items():
            if key in entry:  # only "time" can get here: the rest are named parameters
                raise TypeError(f"audit detail {key!r} would replace a standard field")
            entry[key] = value
        line = json.dumps(
            {k: _jsonable(v) for k, v in entry.items() if v is not None},
            separators=(",", ":"),
        )
        # ensure_ascii (the default) keeps the line free of U+2028 and friends,
        # so nothing but the final newline can split it.
        data = (line + "\n").encode("ascii")
        with self._lock:
            try:
                if self._fd is None:
                    raise OSError("the audit log is closed")
                written = os.write(self._fd, data)
                if written != len(data):
                    # A short write on a regular file means the disk is full; the
                    # partial line is already there and read_audit will name it.
                    raise OSError(f"short write ({written} of {len(data)} bytes)")
            except OSError as exc:
                # The action only, never the details: they may be what failed.
                log.error("cannot write the audit line for %s to %s: %s", action, self.path, exc)
                raise AuditError(f"{self.path}: cannot write the audit line: {exc}") from exc

    def close(self) -> None:
        """Close the file; later records raise AuditError. Safe to call twice."""
        with self._lock:
            fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)

    def __enter__(self) -> AuditLog:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def read_audit(path: Path) -> list[dict[str, object]]:
    """Every entry of the log, oldest first. A corrupt line raises ValueError naming it."""
    entries: list[dict[str, object]] = []
    # Split on b"\n" only: str.splitlines would also split on characters that a
    # hand-edited line might contain.
    for number, raw in enumerate(Path(path).read_bytes().split(b"\n"), start=1):
        if not raw.strip():
            continue
        try:
            entry = json.loads(raw.decode("utf-8"))
        except ValueError as exc:  # also UnicodeDecodeError
            raise ValueError(f"line {number}: not valid JSON: {exc}") from None
        if not isinstance(entry, dict):
            raise ValueError(f"line {number}: not a JSON object")
        entries.append(entry)
    return entries


def audit_middleware(audit: AuditLog, actor: ActorOf) -> Middleware:
    """Record every POST, PUT, PATCH and DELETE with its outcome.

    Meant to be the outermost middleware, so that it sees the answer the client
    gets (after errors are mapped to JSON). ``actor(request)`` is called after
    the handler, when inner middlewares have identified the caller.

    If the line cannot be written the action has already happened; the client
    still gets its answer and the failure is in the gateway log (AuditLog logs it).
    """

    def write(request: web.Request, status: int | None, outcome: str, error: str | None) -> None:
        try:
            user, roles = actor(request)
        except Exception:
            # The answer is already decided; a broken lookup must not change it.
            log.exception("cannot tell who made %s %s", request.method, request.path)
            user, roles = None, ()
        target = {k: str(v) for k, v in request.match_info.items()}
        target.update({k: str(v) for k, v in (request.get(AUDIT_TARGET) or {}).items()})
        try:
            audit.record(
                action=_action(request),
                actor=user,
                roles=roles,
                target=target or None,
                outcome=outcome,
                status=status,
                error=error,
                source=request.remote or "unknown",
            )
        except AuditError:
            pass  # already logged by record()

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.method not in MUTATING_METHODS:
            return await handler(request)
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            write(request, exc.status, outcome_of(exc.status), _error_code(exc))
            raise
        except Exception:
            write(request, 500, "failed", "internal_error")
            raise
        except BaseException:
            # Cancelled (gateway shutdown): what was done is unknown, and no
            # status was sent; record that much rather than nothing.
            write(request, None, "failed", "cancelled")
            raise
        write(request, response.status, outcome_of(response.status), _error_code(response))
        return response

    return middleware


def outcome_of(status: int) -> str:
    """The audit outcome of an HTTP status."""
    if status < 400:
        return "ok"
    if status == 401:
        return "unauthenticated"
    if status == 403:
        return "denied"
    if status < 500:
        return "refused"  # 429, 404, 409, 413, 422, ...: the request was not carried out
    return "failed"


def _action(request: web.Request) -> str:
    route = request.match_info.route
    if route.name:
        return route.name
    # The route's pattern (not the concrete path) keeps ids in the target, where
    # they belong; an unmatched request has only its path.
    resource = route.resource
    path = resource.canonical if resource is not None else request.path
    return f"{request.method} {path}"


def _error_code(response: web.StreamResponse) -> str | None:
    """The ``error.code`` of a JSON error answer, without touching streamed bodies."""
    if response.status < 400 or not isinstance(response, web.Response):
        return None
    body = response.body
    if not isinstance(body, bytes | bytearray):
        return None
    content_type = response.content_type
    if content_type != "application/json" and not content_type.endswith("+json"):
        return None
    try:
        parsed = json.loads(body)
    except ValueError:
        return None
    error = parsed.get("error") if isinstance(parsed, dict) else None
    code = error.get("code") if isinstance(error, dict) else None
    return code if isinstance(code, str) else None


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _jsonable(value: object) -> object:
    """``value`` as plain JSON types; anything else becomes its str()."""
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return str(value)
