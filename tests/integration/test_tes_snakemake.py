"""A real workflow engine through the GA4GH TES endpoint: Snakemake 9 with its TES executor
(snakemake-executor-plugin-tes) runs tests/tes/snakemake/Snakefile (make -> 2x square ->
total) against a real gateway of the testbed. Each rule's job is one TES task, one batch
job at centera, whose script runs `python -m snakemake` itself as alice in the task's
private /tmp (bubblewrap) and moves the files through snakemake-storage-plugin-fs.

What it takes, as the test sets it up:
- Snakemake runs as alice (the researcher), not as root: it uploads its source archive
  to the storage with mode 0600, which only its owner can read back in the tasks.
- alice's software: the venv's own snakemake versions installed (`pip install --target`)
  with Debian's /usr/bin/python3 into a directory outside /tmp (the venv's python lives
  under root's home, and a task's /tmp is its own): the host image `hpcfed/snakemake`
  puts a `python` for it first on PATH. Each task also runs
  `pip install --target .snakemake/pip-deployments snakemake-storage-plugin-fs` (the
  executor's auto-deployment of the storage plugin), which needs the package registry.
- Snakemake 9: 8.30's `--deploy-sources` (each task's first step) fails on a storage
  plugin without settings, such as fs.
- The executor waits 40 s (`init_seconds_before_status_checks`, fixed in the plugin)
  before its first status check; after that it checks each second.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import os
import pwd
import secrets
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import tes

from gateway.centers.config import CenterConfig, HostImage
from gateway.config import load_config
from gateway.config_models import AdmissionConfig
from tests.conftest import REPO, Gateway, config_with, launch_gateway, stop_gateway

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

CENTER = "centera"
USER = "alice"
IMAGE = "hpcfed/snakemake"
SNAKEFILE = REPO / "tests" / "tes" / "snakemake" / "Snakefile"
#: The numbers `make` writes; the workflow's answer is the sum of their squares.
N = 12
#: What the tasks' `python -m snakemake` needs, at the versions this venv has.
PACKAGES = (
    "snakemake",
    "snakemake-executor-plugin-tes",
    "snakemake-storage-plugin-fs",
    "py-tes",
    "six",
)
#: Outside /tmp: bubblewrap gives each task a /tmp of its own, hiding the host's.
SCRATCH = Path("/var/tmp")
WORKFLOW_TIMEOUT = 600.0


@dataclass
class Place:
    """alice's directories for one run: software, storage, workflow, home."""

    base: Path

    @property
    def site(self) -> Path:
        return self.base / "sw" / "site"

    @property
    def bin(self) -> Path:
        return self.base / "sw" / "bin"

    @property
    def store(self) -> Path:
        return self.base / "store"

    @property
    def work(self) -> Path:
        return self.base / "work"

    @property
    def home(self) -> Path:
        return self.base / "home"


def _as_alice(command: list[str], env: dict[str, str], cwd: Path) -> None:
    account = pwd.getpwnam(USER)
    done = subprocess.run(
        command,
        env=env,
        cwd=cwd,
        user=account.pw_uid,
        group=account.pw_gid,
        extra_groups=[],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, f"{command[:4]} failed: {done.stdout}{done.stderr}"


def _base_env(place: Place) -> dict[str, str]:
    return {
        "PATH": f"{place.bin}:/usr/local/bin:/usr/bin:/bin",
        "PYTHONPATH": str(place.site),
        "HOME": str(place.home),
        "XDG_CACHE_HOME": str(place.home / ".cache"),
        "LANG": "C.UTF-8",
    }


@pytest.fixture(scope="module")
def place() -> Iterator[Place]:
    """alice's software (the venv's snakemake versions) and an empty storage, workflow
    directory and home, all owned by alice, removed afterwards."""
    account = pwd.getpwnam(USER)
    base = SCRATCH / f"hpcfed-tes-snakemake-{secrets.token_hex(4)}"
    here = Place(base)
    for d in (here.site.parent, here.bin, here.store, here.work, here.home / "gh"):
        d.mkdir(parents=True)
    for d in (base, *base.rglob("*")):
        os.chown(d, account.pw_uid, account.pw_gid)
    try:
        (here.bin / "python").symlink_to("/usr/bin/python3")
        # The executor's error path prints $GITHUB_WORKSPACE/funnel.log (a leftover of
        # the plugin's own CI): without it a failed task crashes snakemake itself.
        (here.home / "gh" / "funnel.log").write_text("")
        pins = [f"{name}=={importlib.metadata.version(name)}" for name in PACKAGES]
        _as_alice(
            ["/usr/bin/python3", "-m", "pip", "install", "-q", "--target", str(here.site), *pins],
            {**_base_env(here), "PYTHONPATH": ""},
            base,
        )
        shutil.copy(SNAKEFILE, here.work / "Snakefile")
        for made in (here.bin / "python", here.home / "gh" / "funnel.log", here.work / "Snakefile"):
            os.chown(made, account.pw_uid, account.pw_gid, follow_symlinks=False)
        yield here
    finally:
        shutil.rmtree(base, ignore_errors=True)


def host_image(place: Place) -> HostImage:
    """The image the tasks name: the python with snakemake, caches in the task's /tmp."""
    return HostImage(
        name=IMAGE,
        path=[str(place.bin)],
        environment={
            "PYTHONPATH": str(place.site),
            "XDG_CACHE_HOME": "/tmp/.cache",
            "LANG": "C.UTF-8",
        },
    )


def _with_image(center: CenterConfig, image: HostImage) -> CenterConfig:
    images = [i for i in center.tes.images if i.name != image.name] + [image]
    tes_config = center.tes.model_copy(update={"images": images})
    return center.model_copy(update={"tes": tes_config})


@dataclass
class Run:
    gateway: Gateway
    place: Place
    prefix: str
    returncode: int
    output: str
    seconds: float
    tasks: list[Any]


async def _list_tasks(client: tes.HTTPClient) -> list[Any]:
    """Every task the caller can see, page after page (py-tes is synchronous: a thread)."""
    tasks: list[Any] = []
    token: str | None = None
    while True:
        page = await asyncio.to_thread(
            client.list_tasks, view="FULL", page_size=100, page_token=token
        )
        tasks.extend(page.tasks or [])
        token = page.next_page_token
        if not token:
            return tasks


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def run(
    testbed: Any, place: Place, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Run]:
    base = load_config(testbed.gateway_config)
    config = config_with(
        base,
        tmp_path_factory.mktemp("tes-snakemake"),
        centers={CENTER: _with_image(base.centers[CENTER], host_image(place))},
        poll_interval=0.5,
        admission=AdmissionConfig(required=False),
    )
    gateway = await launch_gateway(config, {USER: ("researcher",)})
    prefix = f"wf{secrets.token_hex(3)}"
    # py-tes 0.4 adds /v1/tasks to the URL it is given.
    tes_url = f"{gateway.url}/ga4gh/tes"
    env = {**_base_env(place), "GITHUB_WORKSPACE": str(place.home / "gh")}
    account = pwd.getpwnam(USER)
    command = [
        "/usr/bin/python3",
        "-m",
        "snakemake",
        "--executor",
        "tes",
        "--tes-url",
        tes_url,
        "--tes-token",
        gateway.tokens[USER],
        "--container-image",
        IMAGE,
        "--default-storage-provider",
        "fs",
        "--default-storage-prefix",
        str(place.store),
        "--jobs",
        "3",
        "--jobname",
        f"{prefix}.{{rulename}}.{{jobid}}.sh",
        "--seconds-between-status-checks",
        "1",
        "--config",
        f"count={N}",
    ]
    started = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        *command,
        cwd=place.work,
        env=env,
        user=account.pw_uid,
        group=account.pw_gid,
        extra_groups=[],
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        try:
            out, _ = await asyncio.wait_for(proc.communicate(), WORKFLOW_TIMEOUT)
        except TimeoutError:
            # snakemake waits for its running jobs on SIGTERM: kill it.
            proc.kill()
            out, _ = await proc.communicate()
            pytest.fail(f"snakemake still ran after {WORKFLOW_TIMEOUT:.0f} s:\n{out.decode()}")
        seconds = time.monotonic() - started
        client = tes.HTTPClient(url=tes_url, token=gateway.tokens[USER])
        tasks = [t for t in await _list_tasks(client) if (t.name or "").startswith(prefix)]
        assert proc.returncode is not None
        yield Run(gateway, place, prefix, proc.returncode, out.decode(), seconds, tasks)
    finally:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await stop_gateway(gateway)


def _evidence(run: Run) -> str:
    """snakemake's own output and what each task's executor wrote, for a failure."""
    lines = [run.output[-4000:]]
    for task in run.tasks:
        lines.append(f"--- task {task.name} {task.id}: {task.state}")
        for task_log in task.logs or []:
            lines.extend(task_log.system_logs or [])
            for log in task_log.logs or []:
                lines.append(f"exit {log.exit_code}\n{log.stdout or ''}\n{log.stderr or ''}")
    return "\n".join(lines)


async def test_the_workflow_runs_to_the_right_total(run: Run) -> None:
    print(f"snakemake took {run.seconds:.1f} s")
    assert run.returncode == 0, _evidence(run)
    expected = sum(i * i for i in range(1, N + 1))
    assert (run.place.store / "total.txt").read_text() == f"{expected}\n"
    numbers = (run.place.store / "numbers.txt").read_text().split()
    assert numbers == [str(i) for i in range(1, N + 1)]
    odd = [int(x) for x in (run.place.store / "squares.odd.txt").read_text().split()]
    assert odd == [i * i for i in range(1, N + 1, 2)]


async def test_each_step_ran_as_a_complete_tes_task(run: Run) -> None:
    rules = sorted(t.name.split(".")[1] for t in run.tasks)
    assert rules == ["make", "square", "square", "total"], _evidence(run)
    for task in run.tasks:
        assert task.state == "COMPLETE", (task.name, task.state)
        (executor,) = task.executors
        assert executor.image == IMAGE
        assert executor.command == ["/bin/bash", "/tmp/run_snakemake.sh"]
        assert task.logs, task.name
        (executor_log,) = task.logs[-1].logs
        assert executor_log.exit_code == 0, (task.name, executor_log)


async def test_each_task_was_a_completed_batch_job_at_the_center(run: Run) -> None:
    assert run.tasks
    async with run.gateway.client(USER) as client:
        for task in run.tasks:
            job = await client.get(task.id)
            assert job["id"] == task.id
            assert job["center"] == CENTER, job
            assert job["state"] == "COMPLETED", job
            assert job["native_id"], job


async def test_each_step_was_submitted_only_after_the_steps_it_depends_on_had_ended(
    run: Run,
) -> None:
    """make -> square (both) -> total, as the center's jobs show it: a task's job was
    created after the jobs of the tasks it needs had finished."""
    async with run.gateway.client(USER) as client:
        jobs = {t.name.split(".")[1]: [] for t in run.tasks}  # type: dict[str, list[Any]]
        for task in run.tasks:
            jobs[task.name.split(".")[1]].append(await client.get(task.id))

    def at(job: dict[str, Any], key: str) -> datetime:
        return datetime.fromisoformat(job[key])

    (make,), squares, (total,) = jobs["make"], jobs["square"], jobs["total"]
    assert len(squares) == 2
    for square in squares:
        assert at(square, "created_at") >= at(make, "finished_at"), (make, square)
        assert at(total, "created_at") >= at(square, "finished_at"), (square, total)
