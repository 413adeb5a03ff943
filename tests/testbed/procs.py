"""Process plumbing for the testbed: errors, waiting, pid files, /proc scans, killing."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

#: How often wait loops re-check their condition. Short, because every check is cheap
#: and `up` is on the critical path of every integration test session.
POLL_INTERVAL = 0.05


class TestbedError(RuntimeError):
    """The testbed could not be brought to the asked state; the message says what and why."""

    __test__ = False  # not a pytest test class, despite the name


class TestbedUnavailable(TestbedError):
    """This machine cannot run the testbed at all (not root, a package missing)."""

    __test__ = False


# Which Debian package provides each binary the testbed needs, so a missing one is
# reported as the package to install rather than as a bare FileNotFoundError.
REQUIRED_BINARIES: dict[str, str] = {
    "slurmctld": "slurm-wlm (slurmctld)",
    "slurmd": "slurm-wlm (slurmd)",
    "sinfo": "slurm-wlm (slurm-client)",
    "scontrol": "slurm-wlm (slurm-client)",
    "squeue": "slurm-wlm (slurm-client)",
    "scancel": "slurm-wlm (slurm-client)",
    "sbatch": "slurm-wlm (slurm-client)",
    "munged": "munge",
    "munge": "munge",
    "unmunge": "munge",
    "sshd": "openssh-server",
    "ssh": "openssh-client",
    "ssh-keygen": "openssh-client",
    "qsub": "slurm-wlm-torque",
    "qstat": "slurm-wlm-torque",
    "qdel": "slurm-wlm-torque",
    "slurmdbd": "slurmdbd",
    "sacctmgr": "slurm-wlm (slurm-client)",
    "mariadbd": "mariadb-server",
    "mariadb-install-db": "mariadb-server",
    "mariadb": "mariadb-client",
    "mariadb-admin": "mariadb-client",
    "setsid": "util-linux",
    "useradd": "passwd",
    "usermod": "passwd",
}
_SEARCH_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def which(name: str) -> str:
    """Absolute path of a required binary, or TestbedUnavailable naming its package."""
    found = shutil.which(name, path=_SEARCH_PATH)
    if found is None:
        package = REQUIRED_BINARIES.get(name, "?")
        raise TestbedUnavailable(
            f"{name} not found: install the Debian package {package} "
            "(apt-get install -y slurm-wlm munge openssh-server slurm-wlm-torque "
            "slurmdbd mariadb-server)"
        )
    return found


def check_prerequisites() -> None:
    if os.geteuid() != 0:
        raise TestbedUnavailable("the testbed must run as root (it starts daemons, adds users)")
    for name in REQUIRED_BINARIES:
        which(name)


def wait_until(
    condition: Callable[[], T | None],
    timeout: float,
    what: str,
    diagnose: Callable[[], str] | None = None,
) -> T:
    """Poll `condition` until it returns something truthy, or raise TestbedError.

    `diagnose` is called only on timeout, to append e.g. a log tail to the message.
    """
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() >= deadline:
            detail = diagnose() if diagnose else ""
            raise TestbedError(f"timed out after {timeout:.0f}s waiting for {what}{detail}")
        time.sleep(POLL_INTERVAL)


def run(
    argv: Sequence[str],
    env: Mapping[str, str] | None = None,
    timeout: float = 30.0,
    check: bool = True,
    input_data: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a short command; with check, a failure becomes a TestbedError with its output."""
    try:
        proc = subprocess.run(
            list(argv),
            env=dict(env) if env is not None else None,
            input=input_data,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise TestbedError(f"{' '.join(argv)}: no answer within {timeout:.0f}s") from exc
    if check and proc.returncode != 0:
        raise TestbedError(
            f"{' '.join(argv)} exited {proc.returncode}: {(proc.stderr or proc.stdout).strip()}"
        )
    return proc


def log_tail(path: Path, lines: int = 20) -> str:
    """The last lines of a log, framed for an error message ('' if there is no log)."""
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - 16384))
            text = handle.read().decode("utf-8", "replace")
    except OSError:
        return ""
    tail = "\n".join(text.splitlines()[-lines:])
    return f"\n--- last lines of {path} ---\n{tail}" if tail else ""


# ---------------------------------------------------------------- /proc


def cmdline(pid: int) -> str:
    """The command line of a live process, NUL separators as spaces; '' if gone or a zombie."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return ""
    # A zombie's cmdline is empty, so it counts as not running: it serves nothing.
    return raw.replace(b"\0", b" ").decode("utf-8", "replace").strip()


def environ_has(pid: int, needle: bytes) -> bool:
    try:
        return needle in Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return False


def all_pids() -> list[int]:
    return [int(entry) for entry in os.listdir("/proc") if entry.isdigit()]


def parent_pid(pid: int) -> int:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0
    # The command name in field 2 may contain spaces and parentheses: split after the last ')'.
    return int(stat.rsplit(")", 1)[1].split()[1])


def own_lineage() -> set[int]:
    """This process and its ancestors: never to be killed by a sweep."""
    lineage = set()
    pid = os.getpid()
    while pid > 0 and pid not in lineage:
        lineage.add(pid)
        pid = parent_pid(pid)
    return lineage


def descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for pid in all_pids():
        children.setdefault(parent_pid(pid), []).append(pid)
    found, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def read_pidfile(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def find_daemon(pidfile: Path, matches: Callable[[str], bool]) -> int | None:
    """The pid of a running daemon: its pid file first, else a /proc scan.

    The scan catches a daemon whose pid file was lost, so `up` never starts a second copy
    that would then fail on the busy port.
    """
    pid = read_pidfile(pidfile)
    if pid is not None and matches(cmdline(pid)):
        return pid
    for candidate in all_pids():
        if matches(cmdline(candidate)):
            return candidate
    return None


def is_gone(pids: Iterable[int]) -> bool:
    return all(not cmdline(pid) for pid in pids)


def terminate(pids: Sequence[int], timeout: float = 5.0) -> None:
    """SIGTERM, wait for the processes to go, then SIGKILL whatever is left."""
    pids = list(pids)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    try:
        wait_until(lambda: is_gone(pids), timeout, "processes to exit")
        return
    except TestbedError:
        pass
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    wait_until(
        lambda: is_gone(pids),
        timeout,
        f"processes {pids} to die after SIGKILL",
        lambda: "".join(f"\n  {pid}: {cmdline(pid)}" for pid in pids if cmdline(pid)),
    )


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether a listener could bind host:port (the daemons bind there or to the wildcard)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return False
            raise
    return True


def ssh_banner(port: int, host: str = "127.0.0.1") -> bool:
    """Whether an SSH server answers on host:port with its version banner."""
    try:
        with socket.create_connection((host, port), timeout=2.0) as sock:
            return sock.recv(64).startswith(b"SSH-")
    except OSError:
        return False


def spawn(
    argv: Sequence[str],
    env: Mapping[str, str],
    output: Path,
    as_ids: tuple[int, int] | None = None,
    cwd: Path | None = None,
) -> int:
    """Start a self-daemonizing program and reap its launcher; returns the launcher's exit code.

    The daemons fork into the background themselves, so the launcher exits at once; waiting
    for it avoids zombies. Early errors (before the daemon opens its log) land in `output`.
    `as_ids`: (uid, gid) to run as, without supplementary groups.
    """
    uid, gid = as_ids if as_ids else (None, None)
    with output.open("wb") as out:  # only this launch's output, for error messages
        proc = subprocess.Popen(
            list(argv),
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # not killed with the caller's terminal or pytest's group
            cwd=cwd,
            user=uid,
            group=gid,
            extra_groups=[] if as_ids else None,
        )
    try:
        return proc.wait(timeout=30)
    except subprocess.TimeoutExpired as exc:
        proc.kill()
        proc.wait()
        raise TestbedError(f"{argv[0]} did not detach within 30s{log_tail(output)}") from exc


def write_if_changed(path: Path, text: str, mode: int = 0o644) -> bool:
    """Write atomically when the content differs; True if the file changed (or was missing)."""
    try:
        if path.read_text() == text:
            path.chmod(mode)
            return False
    except OSError:
        pass
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.chmod(mode)
    tmp.replace(path)
    return True
