"""Schemathesis, every check, against a real gateway on the testbed.

The gateway's own OpenAPI document (/v1/openapi.json) is the contract: the
schemathesis CLI generates requests from it (valid ones, which must be accepted,
and invalid ones, which must be refused), and checks each answer against what
the document declares: status codes, headers, content types, response schemas,
no 5xx. It runs twice, with a researcher's token and with an admin's.

Bounds: a fixed seed, few examples per operation, a wall time per run. What
could harm data other than the test's own is kept out of reach: the fuzzed
gateway's file roots at every center are one scratch directory this test makes
(and removes) under alice's home, so every path lands there or is refused;
the `local` center (jobs on this machine) is not configured; an evaluation
(which runs probe jobs at a center for minutes) is not started. Jobs the fuzzer
submits run at the testbed's centers and are cancelled at the end.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
import sys
import time
from pathlib import Path

import aiohttp
import pytest

from gateway.config import LoadedConfig
from tests.conftest import Gateway, GatewayFactory, config_with

pytestmark = pytest.mark.integration

SCHEMATHESIS = Path(sys.executable).parent / "schemathesis"
SEED = 20260401
#: Examples per operation and phase; the two runs, side by side, stay well under 3 minutes.
MAX_EXAMPLES = 8
#: Wall time schemathesis gives one run (it stops generating then and reports);
#: a run that is not over well after it fails the test.
MAX_TIME = 100
RUN_TIMEOUT = MAX_TIME + 60.0
#: Operations never sent: starting an evaluation runs probe jobs for minutes, and
#: running a center's application canaries runs a batch job per binding.
EXCLUDED = ("evaluations.start", "apps.canaries")
FUZZ_NAME = "schemathesis-fuzz"
#: Fewest test cases a run must have sent to count.
MIN_CASES = 500
#: Operations whose 422 for a valid request no schema can foresee: a sha256 the body
#: does not have (checksum_mismatch); a job the centers refuse or cannot run
#: (rejected_by_center, unsatisfiable: their partitions, accounts and limits). The
#: spec's own rules stay checked through POST /v1/jobs/batch, which answers a
#: center's refusal per job (207).
REFUSED_BY_STATE = ("files.upload", "jobs.upload_input", "jobs.submit")
#: Operations whose bodies have rules between fields that JSON Schema does not state:
#: an application definition's templates may name only its own parameters, a
#: parameter's default lies within its bounds, its canary's parameters are valid.
RULES_ACROSS_FIELDS = ("apps.put",)
#: GA4GH TES operations whose 400 for a valid request no schema can foresee: a task's
#: images must be ones its centers publish and its URLs of schemes the federation
#: reaches (TES answers 400, not 422, for what it refuses); a page token must be one
#: the server gave.
TES_REFUSED = ("tes.create", "tes.list")
#: Operations whose 416 for a valid Range no schema can foresee: whether a range starts
#: past the end depends on the size of the file at the center.
RANGE_BY_SIZE = ("files.download", "files.head")
#: What schemathesis takes as an answer to valid data (its default).
ACCEPTED = ["2xx", "3xx", "401", "403", "404", "409", "429", "5xx"]


def scratch_config(base: LoadedConfig, data_dir: Path, scratch: str) -> LoadedConfig:
    """`base` without the local center, every center's file roots the scratch dir."""
    centers = {
        cid: center.model_copy(
            update={"files": center.files.model_copy(update={"roots": [f"{{home}}/{scratch}"]})}
        )
        for cid, center in base.centers.items()
        if center.type != "local"
    }
    gateway = base.gateway
    return config_with(
        base,
        data_dir,
        centers=centers,
        poll_interval=1.0,
        # Every center may take a placed job (no evaluation runs here), and the rate
        # limit (20/s) is not what is under test.
        admission=gateway.admission.model_copy(update={"required": False}),
        limits=gateway.limits.model_copy(update={"rate": 10_000.0}),
    )


def write_config(path: Path, job_id: str, cursor: str | None, task_id: str) -> None:
    """schemathesis.toml: realistic values for the path parameters, so that requests
    reach the operations' logic rather than 404s."""
    lines = [
        f"seed = {SEED}",
        f"max-time = {MAX_TIME}",
        "request-timeout = 10.0",
        "max-stream-events = 2",
        "[generation]",
        f"max-examples = {MAX_EXAMPLES}",
        "[parameters]",
        '"path.center" = "centera"',
    ]
    if cursor is not None:
        lines.append(f'"query.cursor" = "{cursor}"')
    # The job's id for the job routes only (a transfer's id is another thing).
    lines += [
        "[[operations]]",
        'include-path-regex = "^/v1/jobs/[{]id[}]"',
        f'parameters = {{ "path.id" = "{job_id}" }}',
        # A GA4GH TES task to read and cancel.
        "[[operations]]",
        'include-path-regex = "^/ga4gh/tes/v1/tasks/[{]id[}]"',
        f'parameters = {{ "path.id" = "{task_id}" }}',
    ]
    for name in EXCLUDED:
        lines += ["[[operations]]", f'include-operation-id = "{name}"', "enabled = false"]
    for name in (*REFUSED_BY_STATE, *RULES_ACROSS_FIELDS):
        lines += [
            "[[operations]]",
            f'include-operation-id = "{name}"',
            "[operations.checks.positive_data_acceptance]",
            "expected-statuses = " + json.dumps([*ACCEPTED, "422"]),
        ]
    for name in TES_REFUSED:
        lines += [
            "[[operations]]",
            f'include-operation-id = "{name}"',
            "[operations.checks.positive_data_acceptance]",
            "expected-statuses = " + json.dumps([*ACCEPTED, "400", "422"]),
        ]
    for name in RANGE_BY_SIZE:
        lines += [
            "[[operations]]",
            f'include-operation-id = "{name}"',
            "[operations.checks.positive_data_acceptance]",
            "expected-statuses = " + json.dumps([*ACCEPTED, "416"]),
        ]
    path.write_text("\n".join(lines) + "\n")


async def run_schemathesis(gw: Gateway, token: str, config: Path, label: str) -> tuple[int, str]:
    args = [
        str(SCHEMATHESIS),
        "--config-file",
        str(config),
        "run",
        f"{gw.url}/v1/openapi.json",
        "--url",
        gw.url,
        "-H",
        f"Authorization: Bearer {token}",
        "--checks",
        "all",
        # DELETE /v1/jobs/{id} and /v1/transfers/{id} cancel: the record stays
        # readable, by design (docs/api.md), which this check takes for a leak.
        "--exclude-checks",
        "use_after_free",
        "--no-color",
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCHEMATHESIS_")}
    env.update(NO_COLOR="1", PYTHONUNBUFFERED="1")
    proc = await asyncio.create_subprocess_exec(
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        cwd=config.parent,
        env=env,
    )
    try:
        async with asyncio.timeout(RUN_TIMEOUT):
            out, _ = await proc.communicate()
    except TimeoutError:
        proc.kill()
        out, _ = await proc.communicate()
        return -1, f"[{label}] schemathesis did not finish in {RUN_TIMEOUT} s\n" + out.decode()
    return proc.returncode or 0, out.decode(errors="replace")


async def create_task(gw: Gateway, token: str) -> str:
    """A GA4GH TES task of the caller's (a job like the others: cancelled at the end)."""
    task = {
        "name": FUZZ_NAME,
        "resources": {"backend_parameters": {"center": "centera"}},
        "executors": [{"image": "debian:12", "command": ["sleep", "600"]}],
    }
    headers = {"Authorization": f"Bearer {token}"}
    async with (
        aiohttp.ClientSession(headers=headers) as http,
        http.post(f"{gw.url}/ga4gh/tes/v1/tasks", json=task) as resp,
    ):
        assert resp.status == 200, await resp.text()
        return str((await resp.json())["id"])


async def cancel_fuzz_jobs(gw: Gateway, token: str) -> None:
    """Cancel what the fuzzer left running (every page of the caller's jobs)."""
    headers = {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession(headers=headers) as http:
        cursor: str | None = None
        while True:
            params = {"limit": "1000", **({"cursor": cursor} if cursor else {})}
            async with http.get(f"{gw.url}/v1/jobs", params=params) as resp:
                assert resp.status == 200, await resp.text()
                page = await resp.json()
            for job in page["jobs"]:
                if not job["terminal"]:
                    async with http.delete(f"{gw.url}/v1/jobs/{job['id']}") as resp:
                        assert resp.status in (200, 202, 404), await resp.text()
            cursor = page["next_cursor"]
            if cursor is None:
                return


async def test_schemathesis_finds_no_failure_as_researcher_and_as_admin(
    start_gateway: GatewayFactory, testbed_config: LoadedConfig, tmp_path: Path
) -> None:
    scratch = f"hpcfed-fuzz-{secrets.token_hex(4)}"
    # A gateway with the usual roots makes (and at the end removes) the scratch dir.
    keeper = await start_gateway(testbed_config, ("alice",))
    async with keeper.client() as client:
        await client.mkdir("centera", scratch)
    config = scratch_config(testbed_config, tmp_path / "fuzz-data", scratch)
    gw = await start_gateway(config, ("alice",))
    researcher = gw.tokens["alice"]
    admin = gw.issue("alice", "admin")
    try:
        async with gw.client() as client:
            # A job to read, watch and cancel, and a second so that a cursor exists.
            job = await client.submit(
                {"name": FUZZ_NAME, "command": "sleep", "arguments": ["600"], "center": "centera"}
            )
            await client.submit({"name": FUZZ_NAME, "command": "true", "center": "centera"})
            cursor = (await client.list(limit=1))["next_cursor"]
            task_id = await create_task(gw, researcher)
        started = time.monotonic()
        runs = []
        for label, token in (("researcher", researcher), ("admin", admin)):
            config_file = tmp_path / label / "schemathesis.toml"
            config_file.parent.mkdir()
            write_config(config_file, job["id"], cursor, task_id)
            runs.append((label, run_schemathesis(gw, token, config_file, label)))
        # The two runs go at once: each is bounded by its own wall time.
        outcomes = await asyncio.gather(*(run for _, run in runs))
        reports = [
            (label, code, out) for (label, _), (code, out) in zip(runs, outcomes, strict=True)
        ]
        elapsed = time.monotonic() - started
        failed = [(label, output) for label, code, output in reports if code != 0]
        assert not failed, "\n\n".join(f"==== {label}\n{output}" for label, output in failed)
        for label, _, output in reports:
            counts = re.findall(r"Test cases:\s+(\d+) generated", output)
            print(f"{label}: {counts[-1] if counts else '?'} cases; {elapsed:.0f} s in all")
            # A run that generated next to nothing has not tested the document.
            assert counts and int(counts[-1]) >= MIN_CASES, output
        assert elapsed < 300, elapsed
    finally:
        await cancel_fuzz_jobs(gw, researcher)
        async with keeper.client() as client:
            await client.rm("centera", scratch, recursive=True)
