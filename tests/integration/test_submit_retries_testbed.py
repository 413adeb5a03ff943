"""Submissions that never answer: retried with backoff, bounded, shown; the center's
health says so although every probe passes.

Real gateways against the real testbed; the center's `sbatch` and `qsub` hang and fail
without submitting anything (`tests.testbed.status_filter`), while SSH, the
scheduler's ping and the storage roots answer as usual.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import re
from collections.abc import Callable
from typing import Any

import pytest

from gateway.client.core import HpcfedClient
from gateway.config import LoadedConfig
from gateway.config_models import AdmissionConfig, HealthConfig
from tests.conftest import GatewayFactory, config_with
from tests.testbed import Testbed

pytestmark = pytest.mark.integration

ATTEMPTS = 3
USERS = {"alice": ("researcher",), "ops": ("operator",)}


async def until(read: Callable[[], Any], done: Callable[[Any], bool], timeout: float) -> Any:
    async with asyncio.timeout(timeout):
        while True:
            value = await read()
            if done(value):
                return value
            await asyncio.sleep(0.2)


def center_health(doc: dict[str, Any], cid: str) -> dict[str, Any]:
    return next(c for c in doc["centers"] if c["id"] == cid)


def retrying(
    testbed_config: LoadedConfig, cid: str, health: HealthConfig | None = None
) -> LoadedConfig:
    """Center `cid` alone, with short submission timeouts and ATTEMPTS attempts."""
    return config_with(
        testbed_config,
        testbed_config.data_dir,
        centers={cid: testbed_config.centers[cid]},
        admission=AdmissionConfig(required=False),
        health=health or testbed_config.gateway.health,
        poll_interval=0.3,
        submit_timeout=2.0,
        submit_attempts=ATTEMPTS,
    )


async def test_a_submission_that_never_answers_is_retried_with_backoff_then_failed_and_degrades(
    testbed: Testbed,
    testbed_config: LoadedConfig,
    start_gateway: GatewayFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    cid = "centera"
    config = retrying(testbed_config, cid, HealthConfig(probe_interval=0.5, probe_timeout=5.0))
    gw = await start_gateway(config, USERS)
    spec = {"command": "true", "center": cid, "resources": {"walltime": "5m"}}
    testbed.hang_submissions(cid)
    try:
        async with gw.client() as client, HpcfedClient(gw.url, gw.tokens["ops"]) as ops:
            with caplog.at_level(logging.WARNING):
                job = await client.submit(spec)
                assert job["state"] == "SUBMITTING"  # 202: accepted, its outcome unknown
                failed = await until(
                    lambda: client.get(job["id"]), lambda r: r["state"] == "FAILED", 60
                )
            assert failed["native_state"] == "NOT_SUBMITTED"
            assert failed["reason"].startswith(f"not submitted: {ATTEMPTS} attempts failed")
            assert f"center {cid} did not answer" in failed["reason"]

            # Each attempt was logged; the waits between them grew.
            attempts = [
                r.created
                for r in caplog.records
                if r.name == "hpcfed.jobs"
                and re.search(rf"job {job['id']}: submission outcome unknown", r.getMessage())
            ]
            assert len(attempts) == ATTEMPTS
            gaps = [b - a for a, b in itertools.pairwise(attempts)]
            assert gaps[1] > gaps[0] >= 5.0, gaps

            # Every probe passes, but the center's health shows the failing submissions.
            doc = await until(
                lambda: ops.request("GET", "/v1/health"),
                lambda d: center_health(d, cid)["state"] == "degraded",
                10,
            )
            health = center_health(doc, cid)
            assert health["last_probe"]["ok"] is True
            assert f"{ATTEMPTS} submissions in a row failed" in health["reason"]
            assert health["failing_submissions"]["count"] == ATTEMPTS

            # Submissions that go through again bring it back up. (A hung submission
            # still holds the job directory's lock for a few seconds: this one may wait.)
            testbed.restore_status(cid)
            ok = await client.submit(spec)
            sent = await until(lambda: client.get(ok["id"]), lambda r: r["native_id"], 60)
            assert sent["state"] in ("QUEUED", "RUNNING", "COMPLETED")
            doc = await until(
                lambda: ops.request("GET", "/v1/health"),
                lambda d: center_health(d, cid)["state"] == "up",
                10,
            )
            assert center_health(doc, cid)["failing_submissions"] is None
    finally:
        testbed.restore_status(cid)


async def test_the_poller_sends_the_whole_spec_when_it_submits_again(
    testbed: Testbed, testbed_config: LoadedConfig, start_gateway: GatewayFactory
) -> None:
    """The poller reads jobs without their scripts (bounded memory); a job it sends
    again after an unanswered submission runs its whole script, with its environment."""
    cid = "centera"
    config = retrying(testbed_config, cid)
    gw = await start_gateway(config, USERS)
    body = "".join(f'echo line {i} of "$GREETING"\n' for i in range(200))
    spec = {
        "script": "#!/bin/bash\n" + body,
        "environment": {"GREETING": "the whole script"},
        "center": cid,
        "resources": {"walltime": "5m"},
    }
    testbed.hang_submissions(cid)
    try:
        async with gw.client() as client:
            job = await client.submit(spec)
            assert job["state"] == "SUBMITTING"  # the first attempt went unanswered
        testbed.restore_status(cid)
        async with gw.client() as client:
            done = await until(lambda: client.get(job["id"]), lambda r: r["terminal"], 90)
            assert (done["state"], done["exit_code"]) == ("COMPLETED", 0), done
            assert done["spec"]["script"] == spec["script"]
            out = await client.output(job["id"], "stdout")
    finally:
        testbed.restore_status(cid)
    assert out.decode().splitlines() == [f"line {i} of the whole script" for i in range(200)]
