"""The audit log: one JSON line per mutating action, from the gateway and the CLI.

Every submit, cancel, upload, delete, token issue and config or vault change is
appended to one file as a JSON object on its own line::

    {"time": "2025-01-02T03:04:05.678Z", "actor": "alice", "roles": ["researcher"],
     "action": "jobs.submit", "target": {"job": "j-1"}, "outcome": "ok",
     "status": 201, "source": "10.0.0.7"}

`AuditTrail` is the contract: `record` builds the entry, a backend keeps it
(`append`) and gives every entry back in order (`entries`). `AuditLog` is the
backend of the embedded store, a file of JSON lines: the gateway and admin
commands run in different processes and may write it at once; each line is
written with a single ``write(2)`` on a file opened with ``O_APPEND``, so lines
never interleave. Headers, bodies, query strings and tokens are never recorded.
"""

from __future__ import annotations

import abc
import json
import logging
import os
import threading
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Self

log = logging.getLogger("hpcfed.audit")


class AuditError(Exception):
    """An audit line could not be written."""


class AuditTrail(abc.ABC):
    """Where audit entries are kept, in the order they were recorded.

    Errors: `append` (and so `record`) raises AuditError when the entry cannot be
    kept, also after `close`; `entries` raises ValueError naming a corrupt entry.
    """

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
        """Keep one entry. Raises AuditError (after logging it) if it cannot."""
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
        self.append({k: _jsonable(v) for k, v in entry.items() if v is not None})

    @abc.abstractmethod
    def append(self, entry: dict[str, object]) -> None:
        """Keep one entry (plain JSON values, no None) durably, after every earlier one."""

    @abc.abstractmethod
    def entries(self) -> list[dict[str, object]]:
        """Every entry, oldest first."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release the backend; later appends raise AuditError. Safe to call twice."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class AuditLog(AuditTrail):
    """Appends audit lines to ``path`` (JSON lines); safe across threads and processes."""

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

    def append(self, entry: dict[str, object]) -> None:
        action = entry.get("action")
        line = json.dumps(entry, separators=(",", ":"))
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

    def entries(self) -> list[dict[str, object]]:
        return read_audit(self.path) if self.path.exists() else []

    def close(self) -> None:
        with self._lock:
            fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)


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
