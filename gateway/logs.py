"""Log output: one JSON object per line (the default of `hpcfed serve`), or text.

A JSON line holds ts (ISO 8601, UTC), level, logger, message, request_id (while
a request is served), every field passed with `extra=`, and an exception's
type and traceback when there is one.

`AccessLog` writes aiohttp's access log line (one per request, logger
"aiohttp.access") with the message and fields aiohttp's own AccessLogger gives
for its default format, at a fraction of the cost.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from datetime import UTC, datetime
from typing import Any, TextIO

from aiohttp.abc import AbstractAccessLogger
from aiohttp.web_log import AccessLogger
from aiohttp.web_request import BaseRequest
from aiohttp.web_response import StreamResponse

from adapters.context import REQUEST_ID

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
#: What every LogRecord has; anything else on a record came from `extra=`.
_STANDARD = frozenset(
    vars(logging.LogRecord("x", logging.INFO, "x", 0, "x", None, None)).keys()
) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = getattr(record, "request_id", None) or REQUEST_ID.get()
        if request_id is not None:
            doc["request_id"] = request_id
        for key, value in vars(record).items():
            if key not in _STANDARD and key not in doc and key != "request_id":
                doc[key] = value
        if record.exc_info:
            doc["exc_type"] = record.exc_info[0].__name__ if record.exc_info[0] else None
            doc["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            doc["exception"] = record.exc_text
        if record.stack_info:
            doc["stack"] = self.formatStack(record.stack_info)
        return json.dumps(doc, default=str, ensure_ascii=False)


def setup_logging(level: str, fmt: str = "json", stream: TextIO | None = None) -> None:
    """Configure the root logger for `hpcfed serve`: `fmt` is "json" or "text"."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # paramiko says "sftp session opened/closed" at INFO for every file operation.
    logging.getLogger("paramiko").setLevel(logging.WARNING)


class AccessLog(AbstractAccessLogger):
    """aiohttp's access log line, for its default format, made cheaply.

    The message and the `extra=` fields are those of aiohttp's AccessLogger with
    `AccessLogger.LOG_FORMAT`; any other format is handed to AccessLogger itself.
    """

    __slots__ = ("_fallback", "_stamp", "_stamp_second")

    def __init__(self, logger: logging.Logger, log_format: str) -> None:
        super().__init__(logger, log_format)
        self._fallback = (
            None if log_format == AccessLogger.LOG_FORMAT else AccessLogger(logger, log_format)
        )
        self._stamp_second = -1
        self._stamp = ""

    @property
    def enabled(self) -> bool:
        return self.logger.isEnabledFor(logging.INFO)

    def _start_time(self, elapsed: float) -> str:
        """``[01/Dec/2026:20:05:23 +0000]``, local time, as aiohttp's %t gives it."""
        second = int(time.time() - elapsed)
        if second != self._stamp_second:
            self._stamp = time.strftime("[%d/%b/%Y:%H:%M:%S %z]", time.localtime(second))
            self._stamp_second = second
        return self._stamp

    def log(self, request: BaseRequest, response: StreamResponse, time: float) -> None:
        if self._fallback is not None:
            self._fallback.log(request, response, time)
            return
        try:
            remote = request.remote
            address = remote if remote is not None else "-"
            started = self._start_time(time)
            version = request.version
            line = f"{request.method} {request.path_qs} HTTP/{version.major}.{version.minor}"
            status = response.status
            size = response.body_length
            headers = request.headers
            referer = headers.get("Referer", "-")
            agent = headers.get("User-Agent", "-")
            self.logger.info(
                f'{address} {started} "{line}" {status} {size} "{referer}" "{agent}"',
                extra={
                    "remote_address": address,
                    "request_start_time": started,
                    "first_request_line": line,
                    "response_status": status,
                    "response_size": size,
                    "request_header": {"Referer": referer, "User-Agent": agent},
                },
            )
        except Exception:
            self.logger.exception("Error in logging")
