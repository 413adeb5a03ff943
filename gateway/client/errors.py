"""The error the Python client raises for an error answer or an unreachable gateway."""

from __future__ import annotations

from typing import Any

import aiohttp


class ClientError(Exception):
    """The gateway answered with an error, or could not be reached."""

    def __init__(self, status: int, code: str, message: str, body: dict[str, Any] | None = None):
        super().__init__(f"{message} ({code}, HTTP {status})" if status else message)
        self.status = status
        self.code = code
        self.message = message
        self.body = body or {}


async def raise_for(resp: aiohttp.ClientResponse) -> None:
    try:
        body = await resp.json(content_type=None)
        err = body["error"]
        raise ClientError(resp.status, err.get("code", "error"), err.get("message", ""), err)
    except (ValueError, KeyError, TypeError, aiohttp.ContentTypeError):
        text = (await resp.text())[:500]
        raise ClientError(resp.status, "http_error", text or resp.reason or "error") from None
