"""The operators' dashboard: served by the gateway, and driven in a headless Chromium
against the real testbed, where a stopped scheduler turns its center red."""

from __future__ import annotations

import asyncio
import json
import os
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yarl

from gateway.config import LoadedConfig
from tests.conftest import IN_CI, REPO, Gateway, GatewayFactory, config_with
from tests.integration._browser import Browser, chromium_path
from tests.testbed import Testbed

pytestmark = pytest.mark.integration

USERS = {"olga": ("operator",), "alice": ("researcher",)}
REMOTE_CENTERS = ("centera", "centerb", "centerc")
#: --down in dashboard.css, as getComputedStyle reports it.
RED = "rgb(207, 34, 46)"
GREEN = "rgb(26, 127, 55)"
CENTER_CLASSES = (
    "JSON.stringify(Object.fromEntries([...document.querySelectorAll('[data-center]')]"
    ".map(e => [e.dataset.center, e.className])))"
)


def artifacts_dir() -> Path:
    return Path(os.environ.get("HPCFED_TEST_ARTIFACTS") or REPO / "test-artifacts")


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    """A headless Chromium; missing, it fails the run under CI and skips elsewhere."""
    if chromium_path() is None:
        reason = "chromium is not installed (make system-deps installs it)"
        if IN_CI:
            pytest.fail(reason)
        pytest.skip(reason)
    async with Browser() as started:
        yield started


async def center_classes(browser: Browser) -> dict[str, str]:
    classes: dict[str, str] = json.loads(await browser.evaluate(CENTER_CLASSES))
    return classes


async def wait_for_page(
    browser: Browser, condition: str, timeout: float, what: str
) -> tuple[Any, float]:
    """Poll a JavaScript expression until it is truthy; its value and the seconds it took."""
    start = time.monotonic()
    while True:
        value = await browser.evaluate(condition)
        if value:
            return value, time.monotonic() - start
        if time.monotonic() - start > timeout:
            state = await center_classes(browser)
            errors = await browser.evaluate("document.getElementById('errors').innerText")
            pytest.fail(
                f"{what} not seen in {timeout} s; centers {state}; errors {errors!r}; "
                f"console {browser.console}"
            )
        await asyncio.sleep(0.25)


def state_is(center: str, state: str) -> str:
    return (
        f"(document.querySelector('[data-center=\"{center}\"]')"
        f"?.classList.contains('state-{state}') ?? false)"
    )


def border_colour(center: str) -> str:
    return f"getComputedStyle(document.querySelector('[data-center=\"{center}\"]')).borderLeftColor"


def fast_probes(config: LoadedConfig) -> LoadedConfig:
    health = config.gateway.health.model_copy(update={"probe_interval": 1.0})
    return config_with(config, config.data_dir, health=health)


# ------------------------------------------------------------ serving the files


async def fetch(gw: Gateway, path: str) -> tuple[int, str, str]:
    url = yarl.URL(gw.url + path, encoded=True)  # sent as written: no client-side clean-up
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        return resp.status, resp.content_type, await resp.text()


async def test_page_and_assets_are_served_with_their_types_and_nothing_else_is(
    start_gateway: GatewayFactory, local_config: LoadedConfig
) -> None:
    gw = await start_gateway(local_config, USERS)
    status, kind, text = await fetch(gw, "/dashboard")
    assert (status, kind) == (200, "text/html")
    assert "/dashboard/dashboard.js" in text
    assert not re.search(r"(src|href)=\"(https?:)?//", text), "no other origin"
    assert (await fetch(gw, "/dashboard/dashboard.js"))[:2] == (200, "text/javascript")
    assert (await fetch(gw, "/dashboard/dashboard.css"))[:2] == (200, "text/css")
    for path in (
        "/dashboard/nothing.js",
        "/dashboard/..%2Fapi%2Fdashboard.py",
        "/dashboard/%2E%2E",
        "/dashboard/../gateway/app.py",
    ):
        status, _, text = await fetch(gw, path)
        assert status in (401, 404), (path, status)  # 401: no route matched, so not public
        assert "import" not in text


async def test_the_token_leaves_the_address_bar_and_a_missing_one_is_asked_for(
    start_gateway: GatewayFactory, local_config: LoadedConfig, browser: Browser
) -> None:
    gw = await start_gateway(local_config, USERS)
    await browser.navigate(f"{gw.url}/dashboard")
    assert await browser.evaluate("document.getElementById('token-form').hidden") is False
    await browser.navigate(f"{gw.url}/dashboard#token={gw.tokens['olga']}&refresh=1")
    assert await browser.evaluate("location.hash") == "#refresh=1"
    stored = await browser.evaluate("sessionStorage.getItem('hpcfed.dashboard.token')")
    assert stored == gw.tokens["olga"]
    assert await browser.evaluate("document.getElementById('token-form').hidden") is True
    await wait_for_page(browser, "!!document.querySelector('[data-center=\"local\"]')", 10, "local")
    await wait_for_page(
        browser, "document.querySelector('#jobs tbody').innerText.includes('no jobs')", 10, "jobs"
    )
    async with gw.client("alice") as alice:
        job = await alice.submit({"command": "true", "center": "local"})
    row, _ = await wait_for_page(
        browser, f"document.querySelector('tr[data-job=\"{job['id']}\"]')?.innerText", 10, "job"
    )
    assert "alice" in row and "local" in row


async def test_api_errors_are_shown_on_the_page(
    start_gateway: GatewayFactory, local_config: LoadedConfig, browser: Browser
) -> None:
    gw = await start_gateway(local_config, USERS)
    # A researcher may not read the federation's health.
    await browser.navigate(f"{gw.url}/dashboard#token={gw.tokens['alice']}&refresh=1")
    text, _ = await wait_for_page(
        browser,
        "document.querySelector('.error[data-source=\"health\"]')?.innerText",
        10,
        "the health error",
    )
    assert "403" in text and "health.read" in text
    # A refused token is reported, and a new one asked for.
    await browser.evaluate("sessionStorage.setItem('hpcfed.dashboard.token', 'not-a-token')")
    text, _ = await wait_for_page(
        browser,
        "document.querySelector('.error[data-source=\"jobs\"]')?.innerText.includes('401')",
        10,
        "the 401 of /v1/jobs",
    )
    assert await browser.evaluate("document.getElementById('token-form').hidden") is False


# ------------------------------------------------------------ the testbed


async def test_a_stopped_scheduler_turns_its_center_red_on_the_dashboard(
    start_gateway: GatewayFactory,
    testbed_config: LoadedConfig,
    testbed: Testbed,
    browser: Browser,
) -> None:
    gw = await start_gateway(fast_probes(testbed_config), USERS)
    shots = artifacts_dir()
    await browser.navigate(f"{gw.url}/dashboard#token={gw.tokens['olga']}&refresh=1")
    all_up = " && ".join(state_is(c, "up") for c in REMOTE_CENTERS)
    await wait_for_page(browser, all_up, 30, "every remote center up")
    assert await browser.evaluate(border_colour("centera")) == GREEN
    await browser.screenshot(shots / "dashboard-all-up.png")

    testbed.stop_daemon("centerb", "slurmctld")
    stopped = time.monotonic()
    try:
        _, _ = await wait_for_page(browser, state_is("centerb", "down"), 30, "centerb down")
        red_after = time.monotonic() - stopped
        assert await browser.evaluate(border_colour("centerb")) == RED
        classes = await center_classes(browser)
        assert "state-up" in classes["centera"].split(), classes
        await browser.screenshot(shots / "dashboard-centerb-down.png")
        print(f"centerb turned red {red_after:.1f} s after its slurmctld stopped")
        assert not [line for line in browser.console if line.startswith("exception")]
    finally:
        await asyncio.to_thread(testbed.start_daemon, "centerb", "slurmctld")
