"""`hpcfed status --watch`: print job changes as the gateway's event stream brings them."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from gateway.client.core import HpcfedClient

EXIT_OK = 0


def change_line(job: dict[str, Any], *, with_id: bool) -> str:
    """One line per change: time, (job id,) state, native state, reason."""
    stamp = datetime.fromisoformat(job["updated_at"]).astimezone().strftime("%Y-%m-%dT%H:%M:%S")
    cells = [stamp, *([job["id"]] if with_id else []), job["state"]]
    cells += [job.get("native_state") or "-", job.get("reason") or "-"]
    return "  ".join(str(c) for c in cells)


async def watch(client: HpcfedClient, job_id: str | None, *, as_json: bool) -> int:
    """With `job_id`, until that job has ended; without, every job the user may see,
    until interrupted."""
    shown: dict[str, tuple[object, ...]] = {}
    async for job in client.events(job_id):
        seen = (job["state"], job.get("native_state"), job.get("reason"), job.get("exit_code"))
        if shown.get(job["id"]) == seen:
            continue  # a change no watcher reads from this line (e.g. staging bookkeeping)
        shown[job["id"]] = seen
        if job["terminal"] and job_id is None:
            shown.pop(job["id"])  # an ended job changes no more; keep the table small
        if as_json:
            print(json.dumps(job, sort_keys=True), flush=True)
        else:
            print(change_line(job, with_id=job_id is None), flush=True)
    return EXIT_OK
