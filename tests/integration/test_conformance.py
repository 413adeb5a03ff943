"""One job spec, the same behaviour at a Slurm center and at a PBS center.

Every spec below is submitted through the real HTTP API to the testbed's
`centera` (Slurm) and `centerc` (PBS dialect) at once; each test then checks,
for each center, what the job observed from inside.
"""

from __future__ import annotations

import asyncio
import pwd
import shutil
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from gateway.client.core import ClientError, HpcfedClient
from gateway.config import load_config
from tests.conftest import Gateway, config_with, launch_gateway, stop_gateway

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

CENTERS = ("centera", "centerc")
RUN = uuid.uuid4().hex[:8]
#: Values a shell would act on if they ever reached one unquoted.
HOSTILE = {
    "SPACES": "  two  spaces  ",
    "QUOTES": 'it\'s "quoted"',
    "DOLLAR": "$HOME ${PATH} $(id) `id`",
    "NEWLINES": "line one\nline two\n",
    "INJECT": f"; touch /tmp/hpcfed-pwned-{RUN} #",
    "BACKSLASH": "a\\b\\\\c",
}
#: A working directory whose name holds metacharacters, under the job user's home.
WORKDIR = f"hpcfed-conformance-{RUN}/dir with spaces; $(id) `id` 'q' \"dq\"\nline2"
CPUS = 3


def _spec(center: str, **fields: Any) -> dict[str, Any]:
    return {"center": center, "resources": {"walltime": "10m"}, **fields}


@dataclass
class Results:
    """What each center did with each spec: name -> center -> final job record."""

    gateway: Gateway
    jobs: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)

    def job(self, name: str, center: str) -> dict[str, Any]:
        return self.jobs[name][center]

    def client(self) -> HpcfedClient:
        return self.gateway.client()


async def _submit_all(client: HpcfedClient, center: str) -> dict[str, dict[str, Any]]:
    env_names = list(HOSTILE)
    printing = " ".join(f'"${name}"' for name in env_names)
    jobs = {
        "env": await client.submit(
            _spec(center, script=f"printf '%s\\0' {printing}\n", environment=HOSTILE)
        ),
        "arguments": await client.submit(
            _spec(center, command="printf", arguments=["%s\\0", *HOSTILE.values()])
        ),
        "cpus": await client.submit(
            _spec(
                center,
                script='echo "${SLURM_CPUS_ON_NODE:-${PBS_NP:-${NCPUS:-}}}"\n',
                resources={"cpus_per_task": CPUS, "walltime": "10m"},
            )
        ),
        "exit3": await client.submit(_spec(center, script="echo before\nexit 3\n")),
        "exit0": await client.submit(_spec(center, command="true")),
        "timeout": await client.submit(
            _spec(center, command="sleep", arguments=["600"], resources={"walltime": "1m"})
        ),
        "array": await client.submit(
            _spec(center, array="0-3", script='echo "element $HPCFED_ARRAY_INDEX"\n')
        ),
    }
    mkdir = await client.submit(
        _spec(center, command="mkdir", arguments=["-p", f"{_home()}/{WORKDIR}"])
    )
    jobs["workdir"] = await client.submit(
        _spec(
            center, command="pwd", working_dir=f"~/{WORKDIR}", dependencies=[{"job": mkdir["id"]}]
        )
    )
    jobs["parent"] = await client.submit(_spec(center, script="sleep 5\ndate +%s.%N\n"))
    jobs["child"] = await client.submit(
        _spec(center, script="date +%s.%N\n", dependencies=[{"job": jobs["parent"]["id"]}])
    )
    return jobs


def _home() -> str:
    return pwd.getpwnam("alice").pw_dir


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def results(testbed: Any, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Results]:
    base = load_config(testbed.gateway_config)
    gateway = await launch_gateway(
        config_with(base, tmp_path_factory.mktemp("conformance"), poll_interval=0.5)
    )
    outcome = Results(gateway)
    try:
        async with gateway.client() as client:
            submitted = {c: await _submit_all(client, c) for c in CENTERS}
            async with asyncio.timeout(360):  # the TIMEOUT jobs need their minute and a kill
                for center, jobs in submitted.items():
                    for name, job in jobs.items():
                        final = await client.wait(job["id"], interval=1)
                        outcome.jobs.setdefault(name, {})[center] = final
        yield outcome
    finally:
        await stop_gateway(gateway)
        shutil.rmtree(f"{_home()}/hpcfed-conformance-{RUN}", ignore_errors=True)


@pytest.mark.parametrize("center", CENTERS)
async def test_environment_values_arrive_byte_for_byte(results: Results, center: str) -> None:
    job = results.job("env", center)
    assert job["state"] == "COMPLETED"
    async with results.client() as client:
        out = await client.output(job["id"])
    assert out.decode().split("\0")[:-1] == list(HOSTILE.values())


@pytest.mark.parametrize("center", CENTERS)
async def test_arguments_are_passed_literally_never_to_a_shell(
    results: Results, center: str
) -> None:
    job = results.job("arguments", center)
    assert job["state"] == "COMPLETED"
    async with results.client() as client:
        out = await client.output(job["id"])
    assert out.decode().split("\0")[:-1] == list(HOSTILE.values())
    assert not Path(f"/tmp/hpcfed-pwned-{RUN}").exists()


@pytest.mark.parametrize("center", CENTERS)
async def test_job_runs_in_the_working_directory_it_asked_for(
    results: Results, center: str
) -> None:
    job = results.job("workdir", center)
    assert job["state"] == "COMPLETED", job["reason"]
    async with results.client() as client:
        assert (await client.output(job["id"])).decode() == f"{_home()}/{WORKDIR}\n"


@pytest.mark.parametrize("center", CENTERS)
async def test_job_is_given_the_cpus_it_asked_for(results: Results, center: str) -> None:
    job = results.job("cpus", center)
    assert job["state"] == "COMPLETED"
    async with results.client() as client:
        assert (await client.output(job["id"])).decode() == f"{CPUS}\n"


@pytest.mark.parametrize("center", CENTERS)
async def test_exit_codes_come_back(results: Results, center: str) -> None:
    failed, ok = results.job("exit3", center), results.job("exit0", center)
    assert (failed["state"], failed["exit_code"]) == ("FAILED", 3)
    assert (ok["state"], ok["exit_code"]) == ("COMPLETED", 0)
    async with results.client() as client:
        assert await client.output(failed["id"]) == b"before\n"


@pytest.mark.parametrize("center", CENTERS)
async def test_a_job_outliving_its_walltime_ends_in_timeout(results: Results, center: str) -> None:
    assert results.job("timeout", center)["state"] == "TIMEOUT"


@pytest.mark.parametrize("center", CENTERS)
async def test_an_array_of_four_is_tracked_as_four_elements(results: Results, center: str) -> None:
    job = results.job("array", center)
    assert job["state"] == "COMPLETED"
    assert [(e["index"], e["state"]) for e in job["elements"]] == [
        (i, "COMPLETED") for i in range(4)
    ]
    async with results.client() as client:
        for index in range(4):
            out = await client.output(job["id"], element=index)
            assert out == f"element {index}\n".encode()


@pytest.mark.parametrize("center", CENTERS)
async def test_a_dependent_job_starts_only_after_its_parent_completed(
    results: Results, center: str
) -> None:
    parent, child = results.job("parent", center), results.job("child", center)
    assert (parent["state"], child["state"]) == ("COMPLETED", "COMPLETED")
    async with results.client() as client:
        parent_end = float(await client.output(parent["id"]))
        child_start = float(await client.output(child["id"]))
    assert child_start >= parent_end


@pytest.mark.parametrize("center", CENTERS)
async def test_a_scheduler_refusal_is_a_4xx_naming_the_field_with_its_message(
    results: Results, center: str
) -> None:
    async with results.client() as client:
        with pytest.raises(ClientError) as err:
            await client.submit(_spec(center, command="true", queue="nosuchqueue"))
    assert (err.value.status, err.value.code) == (422, "rejected_by_center")
    assert err.value.body["field"] == "queue"
    assert "invalid partition" in err.value.message.lower()


@pytest.mark.parametrize("center", CENTERS)
async def test_names_and_directives_with_metacharacters_are_refused(
    results: Results, center: str
) -> None:
    hostile = [
        ({"name": "x; rm -rf ~"}, "name"),
        ({"name": "$(id)"}, "name"),
        ({"queue": "`id`"}, "queue"),
        ({"extra_directives": {"slurm": ["--comment=$(id)"]}}, "extra_directives.slurm[0]"),
        ({"extra_directives": {"pbs": ["-N x;id"]}}, "extra_directives.pbs[0]"),
        ({"working_dir": "~root/x"}, "working_dir"),
    ]
    async with results.client() as client:
        for fields, name in hostile:
            with pytest.raises(ClientError) as err:
                await client.submit(_spec(center, command="true", **fields))
            assert err.value.status == 422 and err.value.body["field"] == name
