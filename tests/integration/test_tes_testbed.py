"""GA4GH TES on the real testbed, driven by py-tes (the GA4GH Python client, from PyPI,
in the version Snakemake's TES executor uses: it speaks TES 1.0's paths under its base
URL, `<gateway>/ga4gh/tes` + `/v1/tasks`) and by plain HTTP for what TES 1.1 added:
tasks of two executors at centera (Slurm) and centerc (the Torque dialect), with an
input by content and one by an hpcfed:// URL of another center, an output put at its
URL; a failing executor, a cancel reaching the center, an image the center does not
publish, filters and pages of the list, and one user's tasks hidden from another."""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
import requests
import tes

from gateway.config import load_config
from gateway.config_models import AdmissionConfig
from tests.conftest import Gateway, config_with, launch_gateway, stop_gateway

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

CENTERS = ("centera", "centerc")
#: Each center's region: py-tes of TES 1.0 chooses a center by its zone.
ZONE = {"centera": "north", "centerc": "east"}
FINAL = ("COMPLETE", "EXECUTOR_ERROR", "SYSTEM_ERROR", "CANCELED", "PREEMPTED")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def gateway(testbed: Any, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Gateway]:
    base = load_config(testbed.gateway_config)
    config = config_with(
        base,
        tmp_path_factory.mktemp("tes"),
        poll_interval=0.5,
        admission=AdmissionConfig(required=False),  # `auto` may go to unevaluated centers
    )
    gw = await launch_gateway(config, ("alice", "bob"))
    try:
        yield gw
    finally:
        await stop_gateway(gw)


def _client(gw: Gateway, user: str = "alice") -> tes.HTTPClient:
    return tes.HTTPClient(url=f"{gw.url}/ga4gh/tes", token=gw.tokens[user], timeout=30)


async def _create(gw: Gateway, task: dict[str, Any], user: str = "alice") -> str:
    """A task with TES 1.1's fields (which py-tes of TES 1.0 cannot send)."""
    status, body = await _http(gw, "POST", "/tasks", user, json=task)
    assert status == 200, body
    return str(body["id"])


async def _call(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """py-tes is synchronous; the gateway serves in this very event loop. An error
    answer's body goes into the exception's message."""
    try:
        return await asyncio.to_thread(fn, *args, **kwargs)
    except requests.HTTPError as exc:
        exc.args = (f"{exc.args[0]}: {exc.response.text}",)
        raise


async def _wait(
    client: tes.HTTPClient, task_id: str, timeout: float = 240, view: str | None = "FULL"
) -> Any:
    """The task once it has ended (FULL view), polled as clients do."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    gw = client.url.removesuffix("/ga4gh/tes")
    headers = {"Authorization": f"Bearer {client.token}"}
    async with aiohttp.ClientSession(headers=headers) as session:
        while True:
            # TES 1.1's states (CANCELING, PAUSED) are more than py-tes of TES 1.0 knows.
            async with session.get(f"{gw}/ga4gh/tes/v1/tasks/{task_id}") as resp:
                state = (await resp.json())["state"]
            if state in FINAL:
                return await _call(client.get_task, task_id, view=view) if view else state
            assert loop.time() < deadline, f"task {task_id} still {state}"
            await asyncio.sleep(0.5)


async def _http(gw: Gateway, method: str, path: str, user: str | None = "alice", **kw: Any) -> Any:
    headers = {"Authorization": f"Bearer {gw.tokens[user]}"} if user else {}
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, f"{gw.url}/ga4gh/tes/v1{path}", headers=headers, **kw) as resp,
    ):
        return resp.status, await resp.json()


async def test_service_info_names_tes_and_the_centers_storage(gateway: Gateway) -> None:
    status, info = await _http(gateway, "GET", "/service-info")
    assert status == 200
    assert info["type"] == {"group": "org.ga4gh", "artifact": "tes", "version": "1.1.0"}
    assert "hpcfed://centera/" in info["storage"] and "hpcfed://centerc/" in info["storage"]
    assert "center" in info["tesResources_backend_parameters"]
    old = await _call(_client(gateway).get_service_info)  # TES 1.0's form of it
    assert old.storage == info["storage"]


@pytest.mark.parametrize("center", CENTERS)
async def test_two_executors_with_inputs_by_content_and_url_and_an_output(
    gateway: Gateway, center: str, tmp_path: Path
) -> None:
    tag = uuid.uuid4().hex[:10]
    # An input file at the *other* center: staged across centers by its hpcfed:// URL.
    source = "centerc" if center == "centera" else "centera"
    data = bytes(range(256)) * 300 + tag.encode()
    local = tmp_path / "in.bin"
    local.write_bytes(data)
    async with gateway.client("alice") as client:
        await client.upload(source, f"tes-{tag}-in.bin", local)
    greeting = "hello 'quoted' $HOME \\n ünï\nsecond line"
    task = tes.Task(
        name=f"two-{center}-{tag}",
        tags={"suite": tag},
        resources=tes.Resources(cpu_cores=1, zones=[ZONE[center]]),
        inputs=[
            tes.Input(path="/data/greeting.txt", content=greeting),
            tes.Input(path="/data/in.bin", url=f"hpcfed://{source}/~/tes-{tag}-in.bin"),
        ],
        outputs=[
            tes.Output(path="/data/out/sum.txt", url=f"hpcfed://{center}/~/tes-{tag}/out/sum.txt")
        ],
        executors=[
            tes.Executor(
                image="debian:12",
                command=[
                    "sh",
                    "-c",
                    "cat /data/greeting.txt; mkdir -p /data/out; "
                    "sha256sum /data/in.bin | cut -c1-64 > /data/out/sum.txt; echo one",
                ],
            ),
            tes.Executor(
                image="debian:bookworm",
                command=["sh", "-c", "cat out/sum.txt; echo two >&2"],
                workdir="/data",
            ),
        ],
    )
    client = _client(gateway)
    task_id = await _call(client.create_task, task)
    done = await _wait(client, task_id)
    assert done.state == "COMPLETE", done.logs[0].system_logs
    (log,) = done.logs
    assert log.metadata["center"] == center and log.metadata["native_id"]
    first, second = log.logs
    assert (first.exit_code, second.exit_code) == (0, 0)
    assert first.stdout == greeting + "one\n"
    digest = hashlib.sha256(data).hexdigest()
    assert second.stdout == digest + "\n" and second.stderr == "two\n"
    assert first.start_time <= first.end_time <= second.start_time <= second.end_time
    # The output is at its URL, with the bytes the task wrote.
    (out,) = log.outputs
    assert out.url == f"hpcfed://{center}/~/tes-{tag}/out/sum.txt"
    assert int(out.size_bytes) == len(digest) + 1
    status, raw = await _http(gateway, "GET", f"/tasks/{task_id}", params={"view": "FULL"})
    assert status == 200
    assert raw["logs"][0]["outputs"][0]["size_bytes"] == str(len(digest) + 1)  # int64 as text
    async with gateway.client("alice") as hc:
        stored = await hc.checksum(center, f"tes-{tag}/out/sum.txt")
    assert stored["sha256"] == hashlib.sha256((digest + "\n").encode()).hexdigest()
    # The task's job ran at the center as a real batch job.
    async with gateway.client("alice") as hc:
        job = await hc.get(task_id)
    assert job["state"] == "COMPLETED" and job["center"] == center and job["native_id"]
    # BASIC leaves out the content and the executors' output.
    basic = await _call(client.get_task, task_id, view="BASIC")
    assert basic.inputs[0].content is None and basic.logs[0].logs[0].stdout is None


async def test_a_failing_executor_is_an_executor_error_with_its_exit_code(
    gateway: Gateway,
) -> None:
    client = _client(gateway)
    task_id = await _call(
        client.create_task,
        tes.Task(
            name="fails",
            resources=tes.Resources(zones=["north"]),
            executors=[
                tes.Executor(image="debian:12", command=["sh", "-c", "echo before; exit 3"]),
                tes.Executor(image="debian:12", command=["echo", "never"]),
            ],
        ),
    )
    done = await _wait(client, task_id)
    assert done.state == "EXECUTOR_ERROR"
    (only,) = done.logs[0].logs  # the second executor never ran
    assert only.exit_code == 3 and only.stdout == "before\n"


async def test_ignore_error_goes_on_to_the_next_executor(gateway: Gateway) -> None:
    task_id = await _create(
        gateway,
        {
            "resources": {"zones": ["east"]},
            "executors": [
                {"image": "debian:12", "command": ["false"], "ignore_error": True},
                {"image": "debian:12", "command": ["echo", "after"]},
            ],
        },
    )
    await _wait(_client(gateway), task_id, view=None)
    # TES 1.1's view of it (py-tes of TES 1.0 knows no `ignore_error`).
    status, done = await _http(gateway, "GET", f"/tasks/{task_id}", params={"view": "FULL"})
    assert status == 200 and done["state"] == "COMPLETE"
    assert [e["exit_code"] for e in done["logs"][0]["logs"]] == [1, 0]
    assert done["logs"][0]["logs"][1]["stdout"] == "after\n"
    assert done["logs"][0]["metadata"]["center"] == "centerc"
    assert done["executors"][0]["ignore_error"] is True


async def test_a_cancelled_task_is_canceled_and_cancelled_at_the_center(
    gateway: Gateway,
) -> None:
    client = _client(gateway)
    task_id = await _call(
        client.create_task,
        tes.Task(
            resources=tes.Resources(zones=["north"]),
            executors=[tes.Executor(image="debian:12", command=["sleep", "600"])],
        ),
    )
    async with gateway.client("alice") as hc:
        async with asyncio.timeout(120):
            async for job in hc.events(task_id):
                if job["state"] == "RUNNING":
                    break
        await _call(client.cancel_task, task_id)
        done = await _wait(client, task_id)
        assert done.state == "CANCELED"
        job = await hc.get(task_id)
    # CANCELLED is only written on the center's word (its accounting or the job's end).
    assert job["state"] == "CANCELLED" and job["native_id"]
    assert "CANCEL" in (job["native_state"] or "")  # the scheduler's own word for it


async def test_an_image_the_center_does_not_publish_is_400_naming_it(gateway: Gateway) -> None:
    client = _client(gateway)
    task = tes.Task(
        resources=tes.Resources(zones=["north"]),
        executors=[
            tes.Executor(image="debian:12", command=["true"]),
            tes.Executor(image="quay.io/nobody/nothing:1", command=["true"]),
        ],
    )
    with pytest.raises(requests.HTTPError) as raised:
        await _call(client.create_task, task)
    resp = raised.value.response
    assert resp.status_code == 400
    body = resp.json()
    assert body["field"] == "executors[1].image" and "quay.io/nobody/nothing:1" in body["msg"]
    # With `center: auto` no center publishes it: still refused, naming it.
    status, body = await _http(
        gateway,
        "POST",
        "/tasks",
        json={"executors": [{"image": "quay.io/nobody/nothing:1", "command": ["true"]}]},
    )
    assert status in (400, 422) and "executors[0].image" in body["msg"]


@pytest.mark.parametrize(
    ("task", "field"),
    [
        ({}, "executors"),
        ({"executors": [{"image": "debian:12", "command": []}]}, "executors[0].command"),
        (
            {"executors": [{"image": "debian:12", "command": ["true"], "workdir": "rel"}]},
            "executors[0].workdir",
        ),
        (
            {
                "executors": [{"image": "debian:12", "command": ["true"]}],
                "inputs": [{"path": "/data/x", "url": "s3://bucket/x"}],
            },
            "inputs[0].url",
        ),
        (
            {
                "executors": [{"image": "debian:12", "command": ["true"]}],
                "inputs": [{"path": "/data/../etc/x", "content": "x"}],
            },
            "inputs[0].path",
        ),
        (
            {
                "executors": [{"image": "debian:12", "command": ["true"]}],
                "resources": {
                    "backend_parameters": {"VmSize": "big"},
                    "backend_parameters_strict": True,
                },
            },
            "resources.backend_parameters.vmsize",
        ),
        (
            {
                "executors": [{"image": "debian:12", "command": ["true"]}],
                "resources": {"cpu_cores": "2"},
            },
            "resources.cpu_cores",
        ),
        (
            {
                "executors": [{"image": "debian:12", "command": ["true"], "stdout": "/etc/x"}],
                "resources": {"zones": ["north"]},
            },
            "executors[0].stdout",
        ),
        (
            {
                "executors": [{"image": "debian:12", "command": ["true"]}],
                "outputs": [{"path": "/out.txt", "url": "hpcfed://centera/~/o.txt"}],
                "resources": {"zones": ["north"]},
            },
            "outputs[0].path",
        ),
    ],
)
async def test_bad_tasks_are_400_naming_the_field(
    gateway: Gateway, task: dict[str, Any], field: str
) -> None:
    status, body = await _http(gateway, "POST", "/tasks", json=task)
    assert status == 400, body
    assert body["field"] == field and body["status_code"] == 400 and field in body["msg"]


async def test_list_filters_by_name_tag_and_state_and_pages(gateway: Gateway) -> None:
    client = _client(gateway)
    suite = uuid.uuid4().hex[:10]
    ids = []
    for i in range(3):
        task = tes.Task(
            name=f"list-{suite}-{i}",
            tags={"suite": suite, "n": str(i), **({"odd": ""} if i % 2 else {})},
            resources=tes.Resources(zones=["north"]),
            executors=[tes.Executor(image="debian:12", command=["true"])],
        )
        ids.append(await _call(client.create_task, task))
    for task_id in ids:
        await _wait(client, task_id)
    status, page = await _http(
        gateway, "GET", "/tasks", params={"tag_key": "suite", "tag_value": suite, "page_size": "2"}
    )
    assert status == 200 and [t["id"] for t in page["tasks"]] == ids[::-1][:2]
    assert page["tasks"][0] == {"id": ids[2], "state": "COMPLETE"}  # MINIMAL by default
    status, rest = await _http(
        gateway,
        "GET",
        "/tasks",
        params={
            "tag_key": "suite",
            "tag_value": suite,
            "page_size": "2",
            "page_token": page["next_page_token"],
        },
    )
    assert [t["id"] for t in rest["tasks"]] == [ids[0]] and "next_page_token" not in rest
    # A tag key without a value matches any value; both tags must match.
    params = [("tag_key", "suite"), ("tag_value", suite), ("tag_key", "odd")]
    status, odd = await _http(gateway, "GET", "/tasks", params=params)
    assert [t["id"] for t in odd["tasks"]] == [ids[1]]
    status, named = await _http(
        gateway, "GET", "/tasks", params={"name_prefix": f"list-{suite}-2", "view": "BASIC"}
    )
    assert [(t["id"], t["name"]) for t in named["tasks"]] == [(ids[2], f"list-{suite}-2")]
    status, failed = await _http(
        gateway, "GET", "/tasks", params={"name_prefix": f"list-{suite}", "state": "EXECUTOR_ERROR"}
    )
    assert failed["tasks"] == []
    # py-tes pages through them too.
    listed = await _call(client.list_tasks, view="MINIMAL", page_size=1)
    assert len(listed.tasks) == 1 and listed.next_page_token
    status, bad = await _http(gateway, "GET", "/tasks", params={"page_token": "nonsense!"})
    assert status == 400 and bad["field"] == "page_token"


async def test_another_users_token_sees_none_of_the_tasks(gateway: Gateway) -> None:
    alice = _client(gateway, "alice")
    task_id = await _call(
        alice.create_task,
        tes.Task(
            resources=tes.Resources(zones=["north"]),
            executors=[tes.Executor(image="debian:12", command=["true"])],
        ),
    )
    bob = _client(gateway, "bob")
    listed = await _call(bob.list_tasks, view="BASIC", page_size=2047)
    assert task_id not in [t.id for t in listed.tasks or []]
    status, body = await _http(gateway, "GET", f"/tasks/{task_id}", user="bob")
    assert status == 404 and body["status_code"] == 404
    status, body = await _http(gateway, "POST", f"/tasks/{task_id}:cancel", user="bob")
    assert status == 404
    await _wait(alice, task_id)
    status, body = await _http(gateway, "GET", "/tasks", user=None)
    assert status == 401 and "msg" in body


async def test_an_application_of_the_catalog_is_an_image_with_its_modules_loaded(
    gateway: Gateway,
) -> None:
    """`lammps:7Jan2022` names the catalog's LAMMPS as centera binds it: its module is
    loaded for that executor only (the next one, a host image, has none of it)."""
    task_id = await _create(
        gateway,
        {
            "resources": {"zones": ["north"]},
            "executors": [
                {
                    "image": "lammps:7Jan2022",
                    "command": ["sh", "-c", 'echo "$LOADEDMODULES|$LAMMPS_POTENTIALS"'],
                },
                {"image": "debian:12", "command": ["sh", "-c", 'echo "[$LOADEDMODULES]"']},
            ],
        },
    )
    await _wait(_client(gateway), task_id, view=None)
    status, done = await _http(gateway, "GET", f"/tasks/{task_id}", params={"view": "FULL"})
    assert status == 200 and done["state"] == "COMPLETE", done
    first, second = done["logs"][0]["logs"]
    assert first["stdout"] == "lammps/7Jan2022|/usr/share/lammps/potentials\n"
    assert second["stdout"] == "[]\n"
    # GROMACS is offered at centerb only: at centera it is no image.
    status, body = await _http(
        gateway,
        "POST",
        "/tasks",
        json={
            "resources": {"backend_parameters": {"center": "centera"}},
            "executors": [{"image": "gromacs", "command": ["gmx", "--version"]}],
        },
    )
    assert status == 400 and body["field"] == "executors[0].image"
