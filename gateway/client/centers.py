"""Access evaluations of centers (docs/evaluation.md), as methods of `HpcfedClient`
(it mixes `CentersClientMixin` in).

async with HpcfedClient(url, admin_token) as client:
    record = await client.evaluate("centera")
    record = await client.wait_evaluation("centera", record["id"])
    print(record["verdict"], record["score"])
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import quote


def _evaluations(center: str, suffix: str = "") -> str:
    return f"/v1/centers/{quote(center, safe='')}/evaluations{suffix}"


class CentersClientMixin:
    """The evaluation routes; needs `_request` of HpcfedClient."""

    if TYPE_CHECKING:

        async def _request(self, method: str, path: str, **kwargs: Any) -> Any: ...

    async def evaluate(self, center: str) -> dict[str, Any]:
        """Start an evaluation (needs centers.admin); the RUNNING record (409
        evaluation_running while another runs for the center)."""
        result: dict[str, Any] = await self._request("POST", _evaluations(center))
        return result

    async def evaluation(self, center: str, evaluation_id: str) -> dict[str, Any]:
        result: dict[str, Any] = await self._request(
            "GET", _evaluations(center, f"/{quote(evaluation_id, safe='')}")
        )
        return result

    async def evaluations(self, center: str, limit: int = 50) -> list[dict[str, Any]]:
        """The center's evaluations, newest first."""
        result = await self._request("GET", _evaluations(center), params={"limit": str(limit)})
        records: list[dict[str, Any]] = result["evaluations"]
        return records

    async def evaluation_report(self, center: str, evaluation_id: str) -> str:
        """The report rendered as Markdown."""
        data = await self._request(
            "GET",
            _evaluations(center, f"/{quote(evaluation_id, safe='')}"),
            params={"format": "markdown"},
        )
        return data.decode("utf-8") if isinstance(data, bytes) else str(data)

    async def wait_evaluation(
        self,
        center: str,
        evaluation_id: str,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 - callers think in deadlines
        interval: float = 1.0,
        progress: Callable[[dict[str, Any]], None] | None = None,
    ) -> dict[str, Any]:
        """Poll until the evaluation has finished (DONE or ERROR); `progress` sees
        every record fetched on the way."""
        async with asyncio.timeout(timeout):
            while True:
                record = await self.evaluation(center, evaluation_id)
                if progress is not None:
                    progress(record)
                if record["state"] != "RUNNING":
                    return record
                await asyncio.sleep(interval)
