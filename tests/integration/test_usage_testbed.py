"""Usage and billing after a scripted run on the real testbed, against figures
computed here by hand from each center's price and the jobs' own run times."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

import pytest

from gateway.client.core import ClientError, HpcfedClient
from gateway.config import LoadedConfig
from tests.conftest import GatewayFactory, config_with
from tests.testbed.gatewayfiles import PUBLISHED

pytestmark = pytest.mark.integration

USERS = {"alice": ("researcher",), "bob": ("researcher",), "olga": ("operator",)}
#: (user, center, seconds of sleep, cores, gpus)
SCRIPT = [
    ("alice", "centera", 2, 2, 0),
    ("alice", "centerc", 1, 1, 0),
    ("alice", "centerb", 2, 1, 1),
    ("bob", "centera", 1, 1, 0),
]


def spec(center: str, seconds: int, cores: int, gpus: int) -> dict[str, Any]:
    resources: dict[str, Any] = {"cpus_per_task": cores}
    if gpus:
        resources.update(gpus_per_node=gpus, gpu_type="a100")
    return {
        "command": "sleep",
        "arguments": [str(seconds)],
        "center": center,
        "resources": resources,
    }


def by_hand(job: dict[str, Any], center: str, cores: int, gpus: int) -> dict[str, float]:
    """Core-hours, GPU-hours and cost of a finished job, from its run times and the
    price the center publishes."""
    usage = job["usage"]
    start = datetime.fromisoformat(usage["started_at"])
    end = datetime.fromisoformat(usage["ended_at"])
    hours = (end - start).total_seconds() / 3600
    price = PUBLISHED[center]["price"]
    return {
        "core_hours": cores * hours,
        "gpu_hours": gpus * hours,
        "cost": cores * hours * price["core_hour"] + gpus * hours * price["gpu_hour"],
    }


async def run_script(clients: dict[str, HpcfedClient]) -> list[tuple[dict[str, Any], tuple]]:
    submitted = [
        (
            await clients[user].submit(spec(center, secs, cores, gpus)),
            (user, center, secs, cores, gpus),
        )
        for user, center, secs, cores, gpus in SCRIPT
    ]
    done = []
    for job, row in submitted:
        finished = await clients[row[0]].wait(job["id"], timeout=120, interval=0.3)
        assert finished["state"] == "COMPLETED", finished
        done.append((finished, row))
    return done


async def test_usage_matches_hand_computed_core_hours_and_cost(
    start_gateway: GatewayFactory, testbed_config: LoadedConfig
) -> None:
    gw = await start_gateway(testbed_config, USERS)
    window_start = time.time()
    async with gw.client("alice") as alice, gw.client("bob") as bob, gw.client("olga") as olga:
        done = await run_script({"alice": alice, "bob": bob})
        window_end = time.time()

        expected: dict[tuple[str, str], dict[str, float]] = {}
        for job, (user, center, secs, cores, gpus) in done:
            usage = job["usage"]
            assert usage["source"] == "center"  # the center's own times, not the gateway's
            assert (usage["cores"], usage["gpus"]) == (cores, gpus)
            start = datetime.fromisoformat(usage["started_at"]).timestamp()
            end = datetime.fromisoformat(usage["ended_at"]).timestamp()
            # The times are the job's own: within the test's window, as long as its sleep.
            assert window_start - 1 <= start <= end <= window_end + 1
            assert secs - 1 <= end - start <= secs + 5
            figures = by_hand(job, center, cores, gpus)
            for name, value in figures.items():
                assert usage[name] == pytest.approx(value, abs=1e-6), (name, job["id"])
            totals = expected.setdefault((user, center), dict.fromkeys(figures, 0.0))
            for name, value in figures.items():
                totals[name] += value

        def check(report: dict[str, Any], users: set[str]) -> None:
            rows = {(r["user"], r["center"]): r for r in report["totals"]}
            assert set(rows) == {k for k in expected if k[0] in users}
            for key, row in rows.items():
                assert row["currency"] == "CNY"
                assert row["jobs"] == sum(1 for s in SCRIPT if (s[0], s[1]) == key)
                for name in ("core_hours", "gpu_hours", "cost"):
                    assert row[name] == pytest.approx(expected[key][name], abs=1e-5)

        check(await alice.usage(), {"alice"})
        check(await bob.usage(), {"bob"})
        check(await olga.usage(), {"alice", "bob"})  # an operator sees everyone

        by_center = await olga.usage(group_by="center", center="centera")
        (row,) = by_center["totals"]
        assert row["center"] == "centera" and "user" not in row
        assert row["core_hours"] == pytest.approx(
            expected[("alice", "centera")]["core_hours"]
            + expected[("bob", "centera")]["core_hours"],
            abs=1e-5,
        )
        listed = await alice.usage(jobs=True)
        assert {j["id"] for j in listed["jobs"]} == {j["id"] for j, r in done if r[0] == "alice"}
        before = datetime.fromtimestamp(window_start - 3600).astimezone().isoformat()
        assert (await olga.usage(until=before))["totals"] == []

        with pytest.raises(ClientError) as err:
            await alice.usage(user="bob")
        assert err.value.status == 403 and err.value.body["field"] == "user"
        with pytest.raises(ClientError) as err:
            await olga.usage(since="yesterday")
        assert err.value.status == 400 and err.value.body["field"] == "since"


async def test_a_job_is_billed_at_the_price_its_center_had_when_it_ran(
    start_gateway: GatewayFactory, testbed_config: LoadedConfig
) -> None:
    gw = await start_gateway(testbed_config, USERS)
    async with gw.client("alice") as alice:
        old = await alice.submit(spec("centera", 1, 2, 0))
        old = await alice.wait(old["id"], timeout=90, interval=0.3)
    await gw.stop()

    centera = testbed_config.centers["centera"]
    dearer = centera.model_copy(
        update={"price": centera.price.model_copy(update={"core_hour": 0.5})}
    )
    config = config_with(
        testbed_config,
        testbed_config.data_dir,
        centers={**testbed_config.centers, "centera": dearer},
    )
    again = await start_gateway(config, USERS)
    async with again.client("alice") as alice:
        new = await alice.submit(spec("centera", 1, 2, 0))
        new = await alice.wait(new["id"], timeout=90, interval=0.3)
        report = await alice.usage(jobs=True)
    jobs = {j["id"]: j for j in report["jobs"]}
    assert jobs[old["id"]]["price"]["core_hour"] == 0.05
    assert jobs[old["id"]]["cost"] == pytest.approx(old["usage"]["core_hours"] * 0.05, abs=1e-6)
    assert jobs[new["id"]]["price"]["core_hour"] == 0.5
    assert jobs[new["id"]]["cost"] == pytest.approx(new["usage"]["core_hours"] * 0.5, abs=1e-6)
    (row,) = report["totals"]
    assert row["cost"] == pytest.approx(jobs[old["id"]]["cost"] + jobs[new["id"]]["cost"], abs=1e-6)
