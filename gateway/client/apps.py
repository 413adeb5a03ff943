"""Published applications (the catalog, and each center's canaries of its bindings),
as methods of `HpcfedClient` (it mixes `AppsClientMixin` in).

async with HpcfedClient(url, token) as client:
    for app in await client.apps(center="centera"):
        print(app["name"], [v["version"] for v in app["versions"]])
    run = await client.run_canaries("centera")            # needs centers.admin
    for outcome in await client.wait_canaries("centera", run["id"], timeout=600):
        print(outcome["app"], outcome["version"], outcome["state"], outcome["message"])

A job of an application is submitted like any other, with `app:` in its spec:
`await client.submit({"center": "auto", "app": {"name": "lammps", "parameters": {...}}})`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import quote


def _app(name: str) -> str:
    return f"/v1/apps/{quote(name, safe='')}"


def canary_outcomes(
    apps: list[dict[str, Any]], center: str, run: dict[str, Any]
) -> list[dict[str, Any]]:
    """Each binding of the canary run `run` (the answer of `run_canaries`) as the
    listing `apps` (of `GET /v1/apps?center=`) shows it at `center`: {app, version,
    state, message, checked_at, done}, `done` once its verification is the run's. A
    binding the listing does not show (its application or version is not in the
    catalog) is done and failed: its canary cannot run."""
    offers: dict[tuple[str, str], dict[str, Any]] = {}
    for app in apps:
        for version in app.get("versions", []):
            for offer in version.get("centers", []):
                if offer.get("center") == center:
                    offers[(app["name"], version["version"])] = offer
    outcomes = []
    for binding in run.get("bindings", []):
        key = (binding["app"], binding["version"])
        offer = offers.get(key)
        if offer is None:  # bound by the center but not in the catalog: never listed
            outcomes.append(
                {
                    "app": key[0],
                    "version": key[1],
                    "state": "failed",
                    "message": f"{key[0]} {key[1]} is not in the catalog",
                    "checked_at": None,
                    "done": True,
                }
            )
            continue
        done = offer.get("evaluation_id") == run["id"]
        outcomes.append(
            {
                "app": key[0],
                "version": key[1],
                "state": offer.get("state", "unverified") if done else "running",
                "message": offer.get("message") if done else None,
                "checked_at": offer.get("checked_at") if done else None,
                "done": done,
            }
        )
    return outcomes


class AppsClientMixin:
    """The application routes; needs `_request` of HpcfedClient."""

    if TYPE_CHECKING:

        async def _request(self, method: str, path: str, **kwargs: Any) -> Any: ...

    async def apps(self, center: str | None = None) -> list[dict[str, Any]]:
        """Every application of the catalog, each version with the centers offering it
        and the state of their canary (verified, failed, unverified); with `center`, only
        that center's offers."""
        params = {"center": center} if center else None
        result = await self._request("GET", "/v1/apps", params=params)
        apps: list[dict[str, Any]] = result["apps"]
        return apps

    async def app(self, name: str) -> dict[str, Any]:
        """One application: what `apps()` shows of it, and its parameters, outputs,
        resources, limits, canary and run template."""
        result: dict[str, Any] = await self._request("GET", _app(name))
        return result

    async def put_app(self, name: str, definition: dict[str, Any]) -> dict[str, Any]:
        """Create or replace the definition `name` (needs apps.admin); the application
        as `app()` shows it. Definitions from the gateway's files cannot be replaced."""
        result: dict[str, Any] = await self._request("PUT", _app(name), json=definition)
        return result

    async def delete_app(self, name: str) -> None:
        """Remove a definition that was put through the API (needs apps.admin)."""
        await self._request("DELETE", _app(name))

    async def run_canaries(self, center: str) -> dict[str, Any]:
        """Start the canary of every binding of the center (needs centers.admin):
        {id, center, bindings: [{app, version}], started_at}."""
        path = f"/v1/centers/{quote(center, safe='')}/app-canaries"
        result: dict[str, Any] = await self._request("POST", path)
        return result

    async def wait_canaries(
        self,
        center: str,
        run_id: str | dict[str, Any],
        *,
        timeout: float | None = None,  # noqa: ASYNC109 - callers think in deadlines
        interval: float = 1.0,
        progress: Callable[[list[dict[str, Any]]], None] | None = None,
    ) -> list[dict[str, Any]]:
        """Poll the center's listing until every binding of the run shows a verification
        of that run; return each as {app, version, state, message, checked_at}.

        `run_id` is the run's id, or the answer of `run_canaries` (which names its
        bindings; with an id only, the bindings are those the listing shows at the
        center). `progress` sees the outcomes (with `done` and state `running` for
        those not in yet) after every poll."""
        run = run_id if isinstance(run_id, dict) else {"id": run_id}
        async with asyncio.timeout(timeout):
            while True:
                apps = await self.apps(center)
                if "bindings" not in run:
                    run = {**run, "bindings": _bindings_at(apps, center)}
                outcomes = canary_outcomes(apps, center, run)
                if progress is not None:
                    progress(outcomes)
                if all(o["done"] for o in outcomes):
                    return [{k: v for k, v in o.items() if k != "done"} for o in outcomes]
                await asyncio.sleep(interval)


def _bindings_at(apps: list[dict[str, Any]], center: str) -> list[dict[str, str]]:
    return [
        {"app": app["name"], "version": version["version"]}
        for app in apps
        for version in app.get("versions", [])
        if any(offer.get("center") == center for offer in version.get("centers", []))
    ]
