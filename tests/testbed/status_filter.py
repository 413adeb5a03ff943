"""Centers whose status answers lose jobs, or whose submissions hang, for tests.

Every testbed center's sshd puts `<center dir>/bin` first on PATH. There `squeue` and
`qstat` run the real commands untouched unless `<center dir>/drop-ids` (native ids, one a
line) or `<center dir>/drop-mode` exists; then this filter runs the real command and
removes from its output the jobs listed in `drop-ids` (an array's elements with it), or,
with `drop-mode` holding `all-but-first`, every job after the first one (what OpenPBS's
`qstat -f -F json ID1 ID2 ...` really does). Its exit status is the real command's.

`sbatch` and `qsub` there hang for a while and fail, submitting nothing, while
`<center dir>/submit-hangs` exists.

Run as `python3 status_filter.py <center dir> <real command> [args...]`; standard library
only, since it runs as the job user at the center.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tests.testbed.centers import CenterInfo

#: The commands wrapped at every center (Slurm's and its Torque-dialect ones).
WRAPPED = ("squeue", "qstat")
#: Submit commands that hang (and then fail, submitting nothing) while
#: `<center dir>/submit-hangs` exists: a center whose submissions never answer.
SUBMIT_WRAPPED = ("sbatch", "qsub")
SUBMIT_HANG_SECONDS = 6

#: What squeue -O prints first on each line, and `Job Id:` blocks of `qstat -f`.
_SQUEUE_ID_RE = re.compile(r"^(\d+)")
_QSTAT_BLOCK_RE = re.compile(r"^Job Id:\s*([^.\s\[]+)")


def _short(native_id: str) -> str:
    """'123.server' and '123[]' -> '123': how a listing's ids are compared."""
    return re.split(r"[.\[_]", native_id.strip(), maxsplit=1)[0]


def filter_squeue(text: str, drop: set[str], first_only: bool) -> str:
    kept, first = [], None
    for line in text.splitlines(keepends=True):
        match = _SQUEUE_ID_RE.match(line)
        job = match.group(1) if match else None
        if job is not None:
            first = first or job
            if job in drop or (first_only and job != first):
                continue
        kept.append(line)
    return "".join(kept)


def filter_qstat_blocks(text: str, drop: set[str], first_only: bool) -> str:
    kept, keep, first = [], True, None
    for line in text.splitlines(keepends=True):
        match = _QSTAT_BLOCK_RE.match(line)
        if match is not None:
            job = match.group(1)
            first = first or job
            keep = job not in drop and not (first_only and job != first)
        if keep:
            kept.append(line)
    return "".join(kept)


# ---------------------------------------------------------------- the testbed's side


def _wrapper(center_dir: Path, real: str) -> str:
    filter_script = center_dir / "bin" / "status_filter.py"
    return (
        "#!/bin/sh\n"
        "# The hpcfed testbed's status wrapper (tests/testbed/status_filter.py). Generated.\n"
        f"d={center_dir}\n"
        'if [ -e "$d/drop-ids" ] || [ -e "$d/drop-mode" ]; then\n'
        f'  exec /usr/bin/python3 {filter_script} "$d" {real} "$@"\n'
        "fi\n"
        f'exec {real} "$@"\n'
    )


def _submit_wrapper(center_dir: Path, real: str) -> str:
    return (
        "#!/bin/sh\n"
        "# The hpcfed testbed's submit wrapper (tests/testbed/status_filter.py). Generated.\n"
        f"if [ -e {center_dir}/submit-hangs ]; then sleep {SUBMIT_HANG_SECONDS}; exit 1; fi\n"
        f'exec {real} "$@"\n'
    )


def install(center: CenterInfo) -> None:
    """The wrappers in `<center dir>/bin`, which the center's sshd puts first on PATH."""
    from tests.testbed.procs import write_if_changed

    bin_dir = center.dir / "bin"
    bin_dir.mkdir(mode=0o755, exist_ok=True)
    write_if_changed(bin_dir / "status_filter.py", Path(__file__).read_text(), 0o644)
    for name in WRAPPED:
        real = shutil.which(name, path="/usr/local/bin:/usr/bin:/bin")
        if real is not None:
            write_if_changed(bin_dir / name, _wrapper(center.dir, real), 0o755)
    for name in SUBMIT_WRAPPED:
        real = shutil.which(name, path="/usr/local/bin:/usr/bin:/bin")
        if real is not None:
            write_if_changed(bin_dir / name, _submit_wrapper(center.dir, real), 0o755)


def drop(center: CenterInfo, native_ids: list[str] | tuple[str, ...]) -> None:
    path = center.dir / "drop-ids"
    known = path.read_text().split() if path.exists() else []
    path.write_text("".join(f"{i}\n" for i in [*known, *native_ids]))
    path.chmod(0o644)


def set_mode(center: CenterInfo, mode: str) -> None:
    path = center.dir / "drop-mode"
    path.write_text(mode + "\n")
    path.chmod(0o644)


def hang_submissions(center: CenterInfo) -> None:
    path = center.dir / "submit-hangs"
    path.write_text("")
    path.chmod(0o644)


def restore(center: CenterInfo) -> None:
    for name in ("drop-ids", "drop-mode", "submit-hangs"):
        (center.dir / name).unlink(missing_ok=True)


# ---------------------------------------------------------------- at the center


def main(argv: list[str]) -> int:
    center_dir, real, args = Path(argv[1]), argv[2], argv[3:]
    try:
        drop = {_short(i) for i in (center_dir / "drop-ids").read_text().split()}
    except FileNotFoundError:
        drop = set()
    try:
        first_only = (center_dir / "drop-mode").read_text().strip() == "all-but-first"
    except FileNotFoundError:
        first_only = False
    proc = subprocess.run([real, *args], stdout=subprocess.PIPE, check=False)
    text = proc.stdout.decode(errors="surrogateescape")
    keep = filter_qstat_blocks if Path(real).name == "qstat" else filter_squeue
    sys.stdout.write(keep(text, drop, first_only))
    sys.stdout.flush()
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv))
