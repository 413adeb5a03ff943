"""Transfers between centers (docs/data.md), as methods of `HpcfedClient` (it mixes
`TransfersClientMixin` in).

async with HpcfedClient(url, token) as client:
    transfer = await client.transfer("centera", "data", "centerc", "data")
    transfer = await client.wait_transfer(transfer["id"])
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

TRANSFER_TERMINAL = frozenset({"COMPLETED", "FAILED", "CANCELLED"})


class TransfersClientMixin:
    """The transfer routes; needs `_request` of HpcfedClient."""

    if TYPE_CHECKING:

        async def _request(self, method: str, path: str, **kwargs: Any) -> Any: ...

    async def transfer(
        self,
        source_center: str,
        source_path: str,
        dest_center: str,
        dest_path: str,
        overwrite: bool = False,
    ) -> dict[str, Any]:
        """Start a copy between centers (or within one); answers the transfer resource."""
        body = {
            "source": {"center": source_center, "path": source_path},
            "destination": {"center": dest_center, "path": dest_path},
            "overwrite": overwrite,
        }
        result: dict[str, Any] = await self._request("POST", "/v1/transfers", json=body)
        return result

    async def get_transfer(self, transfer_id: str) -> dict[str, Any]:
        result: dict[str, Any] = await self._request(
            "GET", f"/v1/transfers/{quote(transfer_id, safe='')}"
        )
        return result

    async def list_transfers(self) -> list[dict[str, Any]]:
        result = await self._request("GET", "/v1/transfers")
        transfers: list[dict[str, Any]] = (
            result["transfers"] if isinstance(result, dict) else result
        )
        return transfers

    async def cancel_transfer(self, transfer_id: str) -> dict[str, Any]:
        result = await self._request("DELETE", f"/v1/transfers/{quote(transfer_id, safe='')}")
        if isinstance(result, dict):
            return result
        return await self.get_transfer(transfer_id)

    async def wait_transfer(
        self,
        transfer_id: str,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 - callers think in deadlines
        interval: float = 0.5,
        on_update: Callable[[dict[str, Any]], None] | None = None,
    ) -> dict[str, Any]:
        """Poll until the transfer is COMPLETED, FAILED or CANCELLED; return it."""
        async with asyncio.timeout(timeout):
            while True:
                transfer = await self.get_transfer(transfer_id)
                if on_update:
                    on_update(transfer)
                if transfer["state"] in TRANSFER_TERMINAL:
                    return transfer
                await asyncio.sleep(interval)
