"""The accounting center (centerd: slurmdbd on MariaDB, enforced associations, limits
and QoS) through a real gateway: refusals that name their field or the missing
association, placement that knows the account's limits, and states and exit codes
that agree with what `sacct` says at the center."""

from __future__ import annotations

import asyncio
import subprocess
from typing import Any

import pytest

from adapters.slurm.status import slurm_state
from gateway.client.core import ClientError, HpcfedClient
from gateway.config import LoadedConfig
from gateway.config_models import AdmissionConfig
from gateway.http.routes.keys import POLLER
from tests.conftest import GatewayFactory, config_with
from tests.testbed import Testbed

pytestmark = pytest.mark.integration

USERS = ("alice", "bob", "dora")
TERMINAL = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT")


def with_centers(config: LoadedConfig, *ids: str, **fields: object) -> LoadedConfig:
    """Only these centers; every one takes jobs (admission is not under test here)."""
    return config_with(
        config,
        config.data_dir,
        centers={c: config.centers[c] for c in ids},
        admission=AdmissionConfig(required=False),
        **fields,
    )


def at_center(tb: Testbed, *argv: str) -> str:
    proc = subprocess.run(
        list(argv),
        env=tb.scheduler_env("centerd"),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    return proc.stdout


async def refusal(client: HpcfedClient, spec: dict[str, Any]) -> ClientError:
    with pytest.raises(ClientError) as err:
        await client.submit(spec)
    assert err.value.status == 422, err.value
    return err.value


async def test_unknown_account_and_qos_are_refused_naming_their_fields(
    start_gateway: GatewayFactory, testbed_config: LoadedConfig, testbed: Testbed
) -> None:
    gw = await start_gateway(with_centers(testbed_config, "centerd"), USERS)
    async with gw.client("alice") as alice:
        account = await refusal(
            alice, {"command": "true", "center": "centerd", "account": "nosuch"}
        )
        assert (account.code, account.body.get("field")) == ("rejected_by_center", "account")
        assert "Invalid account" in account.message
        qos = await refusal(alice, {"command": "true", "center": "centerd", "qos": "nosuch"})
        assert (qos.code, qos.body.get("field")) == ("rejected_by_center", "qos")
        assert "Invalid qos" in qos.message


async def test_walltime_over_the_qos_limit_is_refused_naming_the_walltime(
    start_gateway: GatewayFactory, testbed_config: LoadedConfig, testbed: Testbed
) -> None:
    gw = await start_gateway(with_centers(testbed_config, "centerd"), USERS)
    spec = {
        "command": "true",
        "center": "centerd",
        "qos": "short",
        "resources": {"walltime": "00:20:00"},
    }
    async with gw.client("alice") as alice:
        err = await refusal(alice, spec)
        assert err.body.get("field") == "resources.walltime"
        assert "QOSMaxWallDurationPerJobLimit" in err.message
        # Within the limit, the same QoS is fine.
        job = await alice.submit({**spec, "resources": {"walltime": "00:05:00"}})
        done = await alice.wait(job["id"], timeout=180, interval=0.3)
        assert (done["state"], done["exit_code"]) == ("COMPLETED", 0)


async def test_a_login_without_association_is_told_so_not_blamed_on_the_account(
    start_gateway: GatewayFactory, testbed_config: LoadedConfig, testbed: Testbed
) -> None:
    gw = await start_gateway(with_centers(testbed_config, "centerd"), USERS)
    async with gw.client("dora") as dora:
        err = await refusal(dora, {"command": "true", "center": "centerd"})
        assert err.body.get("field") == "center"
        assert "login dora has no association at centerd" in err.message
        # Placement knows it too: dora's only center cannot take her job.
        auto = await refusal(dora, {"command": "true", "center": "auto"})
        assert (auto.code, auto.body.get("field")) == ("unsatisfiable", "center")
        assert "login dora has no association at centerd" in auto.message


async def test_auto_does_not_place_a_job_larger_than_its_accounts_limit_and_says_why(
    start_gateway: GatewayFactory, testbed_config: LoadedConfig, testbed: Testbed
) -> None:
    gw = await start_gateway(with_centers(testbed_config, "centera", "centerd"), USERS)
    reason = "account physics at centerd allows 2 CPUs (GrpTRES), the job needs 4"
    four = {"command": "true", "center": "auto", "resources": {"cpus_per_task": 4}}
    async with gw.client("alice") as alice:
        job = await alice.submit(four)
        assert job["center"] == "centera"
        placement = job["placement"]
        assert f"centerd: account: {reason}" in placement["explanation"]
        refused = {c["center"]: c["refused"] for c in placement["candidates"] if not c["eligible"]}
        assert refused == {"centerd": [f"account: {reason}"]}
    # Where centerd is the only candidate, the job is refused rather than left to pend
    # for ever (AssocGrpCpuLimit) with "wait 0 s".
    # A gateway of its own data: two gateways on one SQLite store would each serve
    # what it cached while the other's poller moves the jobs on.
    alone = config_with(testbed_config, testbed_config.data_dir.with_name("alone"))
    only = await start_gateway(with_centers(alone, "centerd"), USERS)
    async with only.client("alice") as alice:
        err = await refusal(alice, four)
        assert (err.code, err.body.get("field")) == ("unsatisfiable", "account")
        assert reason in err.message
        # Under the account without that limit, or within it, centerd takes it.
        other = await alice.submit({**four, "account": "chemistry"})
        assert other["center"] == "centerd"
        small = await alice.submit({**four, "resources": {"cpus_per_task": 2}})
        assert small["center"] == "centerd"
        # Generous: other tests' jobs (the shared testbed) may hold centerd's 4 CPUs.
        for placed in (other, small):
            done = await alice.wait(placed["id"], timeout=180, interval=0.3)
            assert done["state"] == "COMPLETED"


async def sacct(tb: Testbed, native_id: str) -> dict[str, tuple[str, str]]:
    """JobID -> (State, ExitCode) as `sacct -j ID -P` prints them at the center, once
    every row is final (slurmdbd may record a job's end a moment after slurmctld)."""
    fields = ("-P", "-n", "-X", "--format=JobID,State,ExitCode")
    async with asyncio.timeout(60):
        while True:
            out = at_center(tb, "sacct", "-j", native_id, *fields)
            rows = [line.split("|") for line in out.splitlines() if line.count("|") == 2]
            if rows and all(slurm_state(r[1]).is_terminal for r in rows):
                return {r[0]: (r[1], r[2]) for r in rows}
            await asyncio.sleep(0.5)


def agrees(state: str, exit_code: int | None, sacct_state: str, sacct_exit: str) -> bool:
    """The gateway's state and exit code say what sacct's do: the same normalized state,
    and for a script that ran to an end, its exit status (sacct's "status:signal")."""
    if slurm_state(sacct_state).value != state:
        return False
    status, _, signal = sacct_exit.partition(":")
    if state in ("COMPLETED", "FAILED"):
        return exit_code == (128 + int(signal) if int(signal) else int(status))
    return exit_code is None  # cancelled, timed out: no exit status of the script's own


async def test_states_and_exit_codes_agree_with_sacct_also_after_squeue_forgot_the_jobs(
    start_gateway: GatewayFactory, testbed_config: LoadedConfig, testbed: Testbed
) -> None:
    gw = await start_gateway(with_centers(testbed_config, "centerd", poll_interval=3600))
    poller = gw.app[POLLER]
    async with gw.client("alice") as alice:
        ok = await alice.submit({"script": "exit 0\n", "center": "centerd"})
        three = await alice.submit({"script": "exit 3\n", "center": "centerd"})
        array = await alice.submit(
            {
                "script": 'exit "$SLURM_ARRAY_TASK_ID"\n',
                "array": "0-2",
                "center": "centerd",
                "account": "chemistry",
            }
        )
        # Over physics' GrpTRES=cpu=2: accepted at the center, pending for ever.
        stuck = await alice.submit(
            {"command": "true", "center": "centerd", "resources": {"cpus_per_task": 4}}
        )
        async with asyncio.timeout(120):
            while True:
                await poller.tick()
                pending = await alice.get(stuck["id"])
                if pending["reason"] == "AssocGrpCpuLimit":
                    break
                await asyncio.sleep(0.3)
        assert pending["state"] == "QUEUED"
        await alice.cancel(stuck["id"])
        jobs = [ok, three, array, stuck]
        natives = [j["native_id"] for j in jobs]
        # centerd forgets ended jobs after 2 s (MinJobAge): wait until squeue lists none
        # of them, so what the gateway learns next comes from sacct or the job directory.
        async with asyncio.timeout(240):
            while True:
                listed = at_center(testbed, "squeue", "-h", "-t", "all", "-u", "alice", "-o", "%i")
                ids = {line.split("_")[0] for line in listed.split()}
                if not ids & set(natives):
                    break
                await asyncio.sleep(0.5)
        async with asyncio.timeout(60):
            while True:
                await poller.tick()
                seen = {j["id"]: await alice.get(j["id"]) for j in jobs}
                if all(s["state"] in TERMINAL for s in seen.values()):
                    break
                await asyncio.sleep(0.5)
    assert (seen[ok["id"]]["state"], seen[ok["id"]]["exit_code"]) == ("COMPLETED", 0)
    assert (seen[three["id"]]["state"], seen[three["id"]]["exit_code"]) == ("FAILED", 3)
    cancelled = seen[stuck["id"]]
    assert cancelled["state"] == "CANCELLED"
    assert cancelled["reason"] != "AssocGrpCpuLimit"  # no longer waiting for anything
    for job in (ok, three, stuck):
        record = seen[job["id"]]
        (sacct_state, sacct_exit) = (await sacct(testbed, job["native_id"]))[job["native_id"]]
        assert agrees(record["state"], record["exit_code"], sacct_state, sacct_exit), (
            record["state"],
            record["exit_code"],
            sacct_state,
            sacct_exit,
        )
    elements = {e["index"]: e for e in seen[array["id"]]["elements"]}
    assert sorted(elements) == [0, 1, 2]
    rows = await sacct(testbed, array["native_id"])
    for index, element in elements.items():
        sacct_state, sacct_exit = rows[f"{array['native_id']}_{index}"]
        assert agrees(element["state"], element["exit_code"], sacct_state, sacct_exit), (
            index,
            element,
            sacct_state,
            sacct_exit,
        )
    assert [elements[i]["exit_code"] for i in range(3)] == [0, 1, 2]
