"""`AccessLog` gives the access log line of aiohttp's own AccessLogger."""

from __future__ import annotations

import logging
import re

from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from aiohttp.web_log import AccessLogger

from gateway.http.access_log import AccessLog

_FIELDS = (
    "remote_address",
    "request_start_time",
    "first_request_line",
    "response_status",
    "response_size",
    "request_header",
)


class _Keep(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def _logged(cls: type, headers: dict[str, str], fmt: str = AccessLogger.LOG_FORMAT) -> dict:
    logger = logging.getLogger(f"test.access.{cls.__name__}")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    keep = _Keep()
    logger.addHandler(keep)
    try:
        request = make_mocked_request("GET", "/v1/jobs/abc?limit=5&x=%20", headers=headers)
        response = web.Response(body=b"x" * 17, status=404)  # not sent: body_length 0
        cls(logger, fmt).log(request, response, 0.25)
    finally:
        logger.removeHandler(keep)
    (record,) = keep.records
    return {"message": record.getMessage(), **{k: getattr(record, k) for k in _FIELDS}}


def _without_time(logged: dict) -> dict:
    stamp = logged["request_start_time"]
    assert re.fullmatch(r"\[\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d [+-]\d{4}\]", stamp)
    return {**logged, "message": logged["message"].replace(stamp, "[t]"), "request_start_time": 0}


def test_same_line_and_fields_as_aiohttp() -> None:
    for headers in ({}, {"Referer": "https://x.example/", "User-Agent": 'wrk "2"'}):
        ours, theirs = _logged(AccessLog, headers), _logged(AccessLogger, headers)
        assert _without_time(ours) == _without_time(theirs)
        assert '"GET /v1/jobs/abc?limit=5&x=%20 HTTP/1.1" 404 0' in ours["message"]


def test_other_formats_go_to_aiohttp() -> None:
    fmt = '%a "%r" %s %Tf'
    logger = logging.getLogger("test.access.format")
    keep = _Keep()
    logger.addHandler(keep)
    logger.propagate = False
    logger.setLevel(logging.INFO)
    try:
        request = make_mocked_request("GET", "/x")
        AccessLog(logger, fmt).log(request, web.Response(), 0.5)
    finally:
        logger.removeHandler(keep)
    assert keep.records[0].getMessage().endswith('"GET /x HTTP/1.1" 200 0.500000')


def test_enabled_follows_the_logger_level() -> None:
    logger = logging.getLogger("test.access.level")
    logger.setLevel(logging.WARNING)
    assert not AccessLog(logger, AccessLogger.LOG_FORMAT).enabled
    logger.setLevel(logging.INFO)
    assert AccessLog(logger, AccessLogger.LOG_FORMAT).enabled
