"""The `local:` inputs of a job spec, which `hpcfed submit` uploads: the spec is sent
with each rewritten to `upload: true`, then each file is uploaded into the job."""

from __future__ import annotations

import contextlib
import copy
import dataclasses
from pathlib import Path
from typing import Any

from gateway.cli.common import bad_file, progress_bar
from gateway.client.core import ClientError, HpcfedClient
from gateway.client.files import sha256_file


@dataclasses.dataclass(frozen=True)
class LocalInput:
    """An input of a job spec that `hpcfed submit` uploads: its index and local file."""

    index: int
    file: Path
    destination: str


def prepare_local_inputs(
    spec: dict[str, Any], spec_file: str
) -> tuple[dict[str, Any], list[LocalInput]]:
    """The spec with each `{local: FILE, destination: D}` input rewritten to
    `{upload: true, destination: D}`, and the files to upload after the submit.

    A relative FILE is relative to the spec file's directory (the current one for
    stdin); `destination` defaults to FILE's name. The spec given is not changed.
    """
    inputs = spec.get("inputs")
    if not isinstance(inputs, list) or not any(
        isinstance(i, dict) and "local" in i for i in inputs
    ):
        return spec, []
    base = Path.cwd() if spec_file == "-" else Path(spec_file).parent
    spec = copy.deepcopy(spec)
    uploads: list[LocalInput] = []
    for index, item in enumerate(spec["inputs"]):
        if not isinstance(item, dict) or "local" not in item:
            continue
        where = f"inputs[{index}]"
        local = item.pop("local")
        if not isinstance(local, str) or not local:
            raise bad_file(f"{spec_file}: {where}.local: a local file name is needed")
        for other in ("source", "upload"):
            if other in item:
                raise bad_file(f"{spec_file}: {where}: 'local' and '{other}' together")
        file = (base / Path(local).expanduser()).resolve()
        if not file.is_file():
            problem = "not a file" if file.exists() else "no such file"
            raise bad_file(f"{spec_file}: {where}.local: {file}: {problem}")
        destination = item.get("destination") or file.name
        item["destination"] = destination
        item["upload"] = True
        uploads.append(LocalInput(index, file, str(destination)))
    return spec, uploads


async def upload_local_inputs(
    client: HpcfedClient, job: dict[str, Any], uploads: list[LocalInput], *, progress: bool
) -> None:
    """Upload each local input of a just-submitted job. If one fails the job is
    cancelled (it could never start) and the error raised."""
    for item in uploads:
        try:
            digest = await sha256_file(item.file)
            with progress_bar(progress, f"input {item.index} {item.file.name}") as bar:
                await client.upload_job_input(
                    job["id"], item.index, item.file, sha256=digest, progress=bar
                )
        except (ClientError, OSError) as exc:
            with contextlib.suppress(ClientError):
                await client.cancel(job["id"])
            message = exc.message if isinstance(exc, ClientError) else str(exc)
            raise ClientError(
                getattr(exc, "status", 0),
                getattr(exc, "code", "bad_file"),
                f"job {job['id']} cancelled: uploading input {item.index} "
                f"({item.file} -> {item.destination}) failed: {message}",
            ) from None
