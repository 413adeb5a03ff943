"""An adapter called with what no center could be asked for raises InvalidCall, an
AdapterError, before anything is sent; the gateway answers it as its own fault."""

from __future__ import annotations

from pathlib import Path

import pytest

from adapters.base import Adapter, JobRequest
from adapters.errors import AdapterError, InvalidCall, SubmitRejected
from adapters.local.adapter import LocalAdapter
from adapters.slurm.adapter import SlurmAdapter
from adapters.transport.keys import KeyFile
from adapters.transport.ssh import SSHPool, SSHTarget
from gateway.http.errors import as_domain_error

GID = "0b0e3f6a-5d1c-4c3e-9a51-1f2d3c4b5a69"


def _slurm(pool: object | None = None) -> SlurmAdapter:
    target = SSHTarget("centera", "127.0.0.1", 1, "alice", KeyFile("/k"), ("ssh-ed25519 AAAA",))
    return SlurmAdapter(target, pool or SSHPool(), work_root="/work")  # type: ignore[arg-type]


class _HomeOnly:
    """A pool whose one connection tells the login's home and runs nothing."""

    def connection(self, target: SSHTarget) -> _HomeOnly:
        return self

    async def home(self) -> str:
        return "/home/alice"

    async def run(self, *args: object, **kwargs: object) -> None:
        raise AssertionError("nothing may be sent")


def _local(tmp_path: Path) -> LocalAdapter:
    return LocalAdapter("local", tmp_path)


async def test_a_malformed_native_id_is_not_cancelled() -> None:
    adapter = _slurm()
    with pytest.raises(InvalidCall, match="not a sbatch job id") as refused:
        await adapter.cancel("1; rm -rf ~", GID)
    assert isinstance(refused.value, AdapterError)
    assert refused.value.center == "centera"
    assert adapter.remote_commands == 0


@pytest.mark.parametrize(
    ("stream", "offset", "limit", "element", "says"),
    [
        ("stdin", 0, 10, None, "stream must be stdout or stderr"),
        ("stdout", -1, 10, None, "must not be negative"),
        ("stdout", 0, -1, None, "must not be negative"),
        ("stdout", 0, 10, -2, "element must be an array index"),
        ("stdout", 0, 10, True, "element must be an array index"),
    ],
)
@pytest.mark.parametrize("make", ["slurm", "local"])
async def test_an_output_read_that_names_no_file_is_refused(
    tmp_path: Path, make: str, stream: str, offset: int, limit: int, element: int, says: str
) -> None:
    adapter: Adapter = _slurm() if make == "slurm" else _local(tmp_path)
    with pytest.raises(InvalidCall, match=says):
        await adapter.read_output("1", GID, stream, offset, limit, element)
    assert adapter.remote_commands == 0


async def test_a_local_output_read_reads_the_jobs_file(tmp_path: Path) -> None:
    adapter = _local(tmp_path)
    job_dir = tmp_path / "jobs" / GID
    job_dir.mkdir(parents=True)
    (job_dir / "stderr.3").write_bytes(b"element three")
    chunk = await adapter.read_output(GID, GID, "stderr", offset=8, limit=3, element=3)
    assert (chunk.data, chunk.offset, chunk.size, chunk.exists) == (b"thr", 8, 13, True)
    missing = await adapter.read_output(GID, GID, "stdout", element=3)
    assert not missing.exists


async def test_a_value_no_script_may_carry_is_a_refusal_not_a_crash() -> None:
    adapter = _slurm(_HomeOnly())
    job = JobRequest(gateway_id=GID, name="r", command="true", queue="debug\x01x")
    (outcome,) = await adapter.submit_many([job])
    assert isinstance(outcome, SubmitRejected)
    assert "control character" in outcome.message and outcome.center == "centera"
    assert adapter.remote_commands == 0


async def test_a_working_dir_of_another_users_home_is_an_invalid_call() -> None:
    adapter = _slurm(_HomeOnly())
    with pytest.raises(InvalidCall, match=r"working_dir: .*'~user'"):
        await adapter.job_workdir(GID, "~bob/data")
    assert await adapter.job_workdir(GID, "~/data") == "/home/alice/data"


def test_the_gateway_answers_an_invalid_call_as_its_own_fault() -> None:
    # As any unknown failure: logged, and answered as internal_error (500).
    assert as_domain_error(InvalidCall("stream must be stdout or stderr", center="c")) is None
    answered = as_domain_error(AdapterError("the scheduler said no", center="c"))
    assert answered is not None and answered.code == "center_error"
