"""The Python client of the hpcfed HTTP API (the CLI uses it).

async with HpcfedClient("http://127.0.0.1:8750", token) as client:
    job = await client.submit({"name": "hello", "command": "hostname", "center": "auto"})
    job = await client.wait(job["id"])
    print((await client.output(job["id"])).decode())
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import quote

import aiohttp

from gateway.client.apps import AppsClientMixin
from gateway.client.centers import CentersClientMixin
from gateway.client.errors import ClientError, raise_for
from gateway.client.events import EventsClientMixin
from gateway.client.files import FilesClientMixin
from gateway.client.transfers import TransfersClientMixin

DEFAULT_URL = "http://127.0.0.1:8750"
#: Files the gateway leaves in its data dir for clients on the same machine.
URL_FILE = "gateway-url"
TOKEN_FILE = "client-token"  # noqa: S105 - a file name


def default_data_dir() -> Path:
    return Path(os.path.expanduser(os.environ.get("HPCFED_DATA_DIR", "~/.local/share/hpcfed")))


def discover(url: str | None = None, token: str | None = None) -> tuple[str, str | None]:
    """URL and token from arguments, else HPCFED_URL / HPCFED_TOKEN, else the
    files a gateway on this machine wrote into its data dir."""
    data_dir = default_data_dir()
    if not url:
        url = os.environ.get("HPCFED_URL")
    if not url and (data_dir / URL_FILE).exists():
        url = (data_dir / URL_FILE).read_text(encoding="utf-8").strip()
    if not token:
        token = os.environ.get("HPCFED_TOKEN")
    if not token and (data_dir / TOKEN_FILE).exists():
        token = (data_dir / TOKEN_FILE).read_text(encoding="utf-8").strip()
    return (url or DEFAULT_URL).rstrip("/"), token


class HpcfedClient(
    EventsClientMixin, FilesClientMixin, TransfersClientMixin, CentersClientMixin, AppsClientMixin
):
    def __init__(self, url: str, token: str | None, *, timeout: float = 120.0) -> None:
        self.url = url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._timeout = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=timeout)
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> HpcfedClient:
        self._session = aiohttp.ClientSession(headers=self._headers, timeout=self._timeout)
        return self

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("use 'async with HpcfedClient(...)'")
        return self._session

    async def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            async with self.session.request(method, self.url + path, **kwargs) as resp:
                if resp.status >= 400:
                    await raise_for(resp)
                if resp.content_type == "application/json":
                    return await resp.json()
                return await resp.read()
        except aiohttp.ClientConnectionError as exc:
            message = f"cannot reach the gateway at {self.url}: {exc}"
            raise ClientError(0, "unreachable", message) from None

    # ------------------------------------------------------------ jobs

    async def submit(
        self, spec: dict[str, Any], *, idempotency_key: str | None = None
    ) -> dict[str, Any]:
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        result: dict[str, Any] = await self._request("POST", "/v1/jobs", json=spec, headers=headers)
        return result

    async def submit_batch(
        self, specs: list[dict[str, Any]], *, idempotency_key: str | None = None
    ) -> list[dict[str, Any]]:
        """`POST /v1/jobs/batch`: each job's {index, status, job and/or error}."""
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        body = {"jobs": specs}
        result = await self._request("POST", "/v1/jobs/batch", json=body, headers=headers)
        results: list[dict[str, Any]] = result["results"]
        return results

    async def get(self, job_id: str) -> dict[str, Any]:
        result: dict[str, Any] = await self._request("GET", f"/v1/jobs/{job_id}")
        return result

    async def list(
        self,
        *,
        state: str | None = None,
        center: str | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> dict[str, Any]:
        params: dict[str, str] = {"limit": str(limit)}
        for key, value in (("state", state), ("center", center), ("cursor", cursor)):
            if value:
                params[key] = value
        result: dict[str, Any] = await self._request("GET", "/v1/jobs", params=params)
        return result

    async def cancel(self, job_id: str) -> dict[str, Any]:
        result: dict[str, Any] = await self._request("DELETE", f"/v1/jobs/{job_id}")
        return result

    async def output(
        self, job_id: str, stream: str = "stdout", offset: int = 0, element: int | None = None
    ) -> bytes:
        params = {"offset": str(offset)}
        if element is not None:
            params["element"] = str(element)
        data: bytes = await self._request(
            "GET", f"/v1/jobs/{job_id}/output/{stream}", params=params
        )
        return data

    async def follow_output(
        self, job_id: str, stream: str = "stdout", offset: int = 0, element: int | None = None
    ) -> AsyncIterator[bytes]:
        """Yield output as it is written, until the job has ended."""
        params = {"offset": str(offset), "follow": "true"}
        if element is not None:
            params["element"] = str(element)
        url = f"{self.url}/v1/jobs/{job_id}/output/{stream}"
        async with self.session.get(url, params=params) as resp:
            if resp.status >= 400:
                await raise_for(resp)
            async for chunk in resp.content.iter_any():
                yield chunk

    # ------------------------------------------------------------ tokens

    async def issue_token(
        self,
        user: str,
        roles: list[str],
        *,
        centers: list[str] | None = None,
        ttl: str | None = None,
    ) -> dict[str, Any]:
        """A token for `user` (needs the admin role); the answer holds it in 'token'."""
        body: dict[str, Any] = {"user": user, "roles": roles}
        if centers:
            body["centers"] = centers
        if ttl:
            body["ttl"] = ttl
        result: dict[str, Any] = await self._request("POST", "/v1/tokens", json=body)
        return result

    async def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """Any API call: the decoded JSON answer (bytes for other content); raises
        ClientError for an error answer."""
        return await self._request(method, path, **kwargs)

    # ------------------------------------------------------------ centers

    async def centers(self) -> list[dict[str, Any]]:
        result = await self._request("GET", "/v1/centers")
        centers: list[dict[str, Any]] = result["centers"]
        return centers

    async def computing_power(self, center: str, refresh: bool = False) -> dict[str, Any]:
        """The center's standard computing-power descriptor."""
        path = f"/v1/centers/{quote(center, safe='')}/computing-power"
        return await self.request("GET", path, params={"refresh": "true"} if refresh else None)

    async def usage(self, **filters: Any) -> dict[str, Any]:
        """Core-hours, GPU-hours and cost of finished jobs: user, center, since, until,
        group_by, jobs."""
        params = {
            k: str(v).lower() if isinstance(v, bool) else str(v)
            for k, v in filters.items()
            if v is not None
        }
        return await self.request("GET", "/v1/usage", params=params)
