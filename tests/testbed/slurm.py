"""munged and the Slurm side of a center: config files, fake GPUs, slurmctld and slurmd.

Binding: slurmctld and slurmd have no listen-address setting. With
``CommunicationParameters=NoCtldInAddrAny,NoInAddrAny`` they bind to the address the
machine's own hostname resolves to (``gethostname()``), instead of the wildcard. So:

- if the hostname resolves to a loopback address (the usual /etc/hosts entry), the daemons
  run directly and bind there;
- otherwise each daemon runs in a private UTS namespace (``unshare --uts``) whose hostname
  is ``localhost``, so it still binds to loopback; HPCFED_TESTBED_UTS=1 forces this path;
- only if ``unshare`` is missing do they fall back to the wildcard address.
"""

from __future__ import annotations

import ipaddress
import os
import pwd
import re
import secrets
import socket
import stat
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from tests.testbed import accounting
from tests.testbed.centers import CenterInfo
from tests.testbed.procs import (
    TestbedError,
    cmdline,
    find_daemon,
    log_tail,
    read_pidfile,
    run,
    spawn,
    terminate,
    wait_until,
    which,
)

MUNGE_KEY = Path("/etc/munge/munge.key")
MUNGE_RUN = Path("/run/munge")
MUNGE_PIDFILE = MUNGE_RUN / "munged.pid"
MUNGE_LOG = Path("/var/log/munge/munged.log")

# Partition limits, in the order of CenterInfo.partitions (the first is the default).
_MAX_TIME = {
    "debug": "01:00:00",
    "long": "7-00:00:00",
    "gpu": "1-00:00:00",
    "batch": "2-00:00:00",
    "normal": "1-00:00:00",
}
_RESPONSIVE = {"idle", "mixed", "allocated", "completing"}
_NEEDS_RESUME = {"drained", "draining", "down", "fail", "failing"}


# ---------------------------------------------------------------- munge


def munge_works() -> bool:
    cred = run([which("munge"), "-n"], timeout=5, check=False)
    if cred.returncode != 0:
        return False
    return run([which("unmunge")], input_data=cred.stdout, timeout=5, check=False).returncode == 0


def munged_pid() -> int | None:
    return find_daemon(MUNGE_PIDFILE, lambda cmd: cmd.split(" ", 1)[0].endswith("munged"))


def ensure_munged(marker: Path) -> None:
    """Use a working munged, or start one and record in `marker` that the testbed owns it."""
    if munge_works():
        return
    if munged_pid() is None:
        _ensure_munge_key()
        MUNGE_RUN.mkdir(mode=0o755, parents=True, exist_ok=True)
        os.chown(MUNGE_RUN, *_munge_ids())
        # --force: a munged killed earlier leaves its socket behind, which would block a start.
        argv = [which("munged"), "--force"]
        rc = spawn(argv, os.environ, marker.with_suffix(".out"), as_ids=_munge_ids())
        if rc != 0:
            raise TestbedError(f"munged exited {rc}{log_tail(marker.with_suffix('.out'))}")
        marker.write_text(f"{munged_pid() or ''}\n")
    wait_until(
        munge_works, 10, "munged to answer (munge -n | unmunge)", lambda: log_tail(MUNGE_LOG)
    )


def stop_munged(marker: Path) -> None:
    """Stop munged only if the testbed started it: a system munged may serve other things."""
    if not marker.exists():
        return
    pid = munged_pid()
    if pid is not None:
        terminate([pid])
    marker.unlink()


def _munge_ids() -> tuple[int, int]:
    try:
        entry = pwd.getpwnam("munge")
    except KeyError:
        raise TestbedError("user 'munge' is missing: reinstall the Debian package munge") from None
    return entry.pw_uid, entry.pw_gid


def _ensure_munge_key() -> None:
    if MUNGE_KEY.exists():
        return
    MUNGE_KEY.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(MUNGE_KEY, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o400)
    with os.fdopen(fd, "wb") as handle:
        handle.write(secrets.token_bytes(1024))
    os.chown(MUNGE_KEY, *_munge_ids())
    os.chown(MUNGE_KEY.parent, *_munge_ids())


# ---------------------------------------------------------------- addresses


@dataclass(frozen=True)
class Binding:
    """Where the Slurm daemons listen, and how to launch them so they do."""

    address: str  # what slurm.conf names as controller and node address
    prefix: tuple[str, ...]  # argv prefix (the UTS namespace wrapper, or nothing)
    restricted: bool  # False only in the wildcard fallback


def choose_binding() -> Binding:
    forced = os.environ.get("HPCFED_TESTBED_UTS") == "1"
    if not forced:
        try:
            first = socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET)[0][4][0]
        except (OSError, IndexError):
            first = ""
        if first and ipaddress.ip_address(first).is_loopback:
            return Binding(str(first), (), True)
    try:
        unshare = which("unshare")
    except TestbedError:
        return Binding("127.0.0.1", (), False)
    # "$@" passes the daemon's argv through untouched: nothing is parsed by the shell.
    script = 'hostname localhost && exec "$@"'
    return Binding("127.0.0.1", (unshare, "--uts", "/bin/sh", "-c", script, "sh"), True)


# ---------------------------------------------------------------- config files


def render_slurm_conf(center: CenterInfo, binding: Binding) -> str:
    d = center.dir
    lines = [
        f"# Slurm cluster of the hpcfed testbed center {center.id}. Generated: edits are lost.",
        f"ClusterName={center.id}",
        f"SlurmctldHost=localhost({binding.address})",
        f"SlurmctldPort={center.slurmctld_port}",
        f"SlurmdPort={center.slurmd_port}",
        "SlurmUser=root",
        f"StateSaveLocation={d}/state",
        f"SlurmdSpoolDir={d}/spool",
        f"SlurmctldPidFile={center.pidfile('slurmctld')}",
        f"SlurmdPidFile={center.pidfile('slurmd')}",
        f"SlurmctldLogFile={center.logfile('slurmctld')}",
        f"SlurmdLogFile={center.logfile('slurmd')}",
        # No cgroups and no systemd here: plain process tracking, no task confinement.
        "ProctrackType=proctrack/linuxproc",
        "TaskPlugin=task/none",
        *(
            accounting.slurm_conf_lines(center)
            if center.accounting
            else [
                "JobAcctGatherType=jobacct_gather/none",
                "AccountingStorageType=accounting_storage/none",
            ]
        ),
        "SchedulerType=sched/backfill",
        "SelectType=select/cons_tres",
        "SelectTypeParameters=CR_Core",
        # Declared CPUs/memory exceed this machine's; trust slurm.conf, not the hardware.
        "SlurmdParameters=config_overrides",
        "ReturnToService=2",
        # Refuse impossible requests at submit time, as production centers do.
        "EnforcePartLimits=ALL",
        "MpiDefault=none",
        "MailProg=/bin/true",
        f"MinJobAge={center.min_job_age}",
    ]
    if binding.restricted:
        lines.append("CommunicationParameters=NoCtldInAddrAny,NoInAddrAny")
    node = (
        f"NodeName={center.node} NodeHostname=localhost NodeAddr={binding.address} "
        f"CPUs={center.cpus} RealMemory={center.memory_mib} State=UNKNOWN"
    )
    if center.gpus:
        lines.append("GresTypes=gpu")
        node += f" Gres=gpu:{center.gpu_type}:{center.gpus}"
    lines.append(node)
    for index, part in enumerate(center.partitions):
        default = "YES" if index == 0 else "NO"
        lines.append(
            f"PartitionName={part} Nodes={center.node} Default={default} "
            f"MaxTime={_MAX_TIME[part]} State=UP"
        )
    return "\n".join(lines) + "\n"


def render_gres_conf(center: CenterInfo) -> str:
    if not center.gpus:
        return ""
    last = center.gpus - 1
    return (
        f"NodeName={center.node} Name=gpu Type={center.gpu_type} File={center.dir}/gpu[0-{last}]\n"
    )


def make_fake_gpus(center: CenterInfo) -> None:
    """GRES needs character devices; these have /dev/null's numbers, so they are harmless."""
    for index in range(center.gpus):
        path = center.dir / f"gpu{index}"
        if path.exists() and stat.S_ISCHR(path.stat().st_mode):
            continue
        path.unlink(missing_ok=True)
        os.mknod(path, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
        path.chmod(0o666)


# ---------------------------------------------------------------- daemons


def slurm_env(center: CenterInfo, base_env: Mapping[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ if base_env is None else base_env)
    env["SLURM_CONF"] = str(center.slurm_conf)
    return env


def _matcher(name: str, center: CenterInfo) -> Callable[[str], bool]:
    conf = str(center.slurm_conf)

    def matches(cmd: str) -> bool:
        argv0 = cmd.split(" ", 1)[0]
        return os.path.basename(argv0) == name and conf in cmd.split(" ")

    return matches


def daemon_pid(center: CenterInfo, name: str) -> int | None:
    return find_daemon(center.pidfile(name), _matcher(name, center))


def launch(center: CenterInfo, name: str, binding: Binding) -> None:
    """Start slurmctld or slurmd without waiting for it to serve."""
    pidfile = center.pidfile(name)
    # A stale pid file is dangerous: on start, slurmctld/slurmd signal the pid found there
    # ("kill old daemon"), which after a crash may be an unrelated process.
    if pidfile.exists() and not _matcher(name, center)(cmdline(read_pidfile(pidfile) or 0)):
        pidfile.unlink()
    argv = [which(name), "-f", str(center.slurm_conf)]
    if name == "slurmd":
        argv += ["-N", center.node]
    rc = spawn([*binding.prefix, *argv], slurm_env(center), center.launch_log(name))
    if rc != 0:
        raise TestbedError(
            f"{name} of {center.id} exited {rc} at start"
            f"{log_tail(center.launch_log(name))}{log_tail(center.logfile(name))}"
        )


def ctld_answers(center: CenterInfo) -> bool:
    # A real RPC rather than a bare TCP probe, which slurmctld would log as an error.
    ping = run([which("scontrol"), "ping"], env=slurm_env(center), timeout=10, check=False)
    return ping.returncode == 0


def node_states(center: CenterInfo) -> set[str]:
    """The node's states as sinfo's %T prints them, e.g. {'idle'} or {'down*'}."""
    proc = run(
        [which("sinfo"), "-h", "-N", "-n", center.node, "-o", "%T"],
        env=slurm_env(center),
        timeout=10,
        check=False,
    )
    if proc.returncode != 0:
        return set()
    return {line.strip() for line in proc.stdout.splitlines() if line.strip()}


def slurmd_start_time(center: CenterInfo) -> float:
    """When the node's slurmd last registered (epoch seconds, 1 s resolution), or 0."""
    show = [which("scontrol"), "show", "node", "-o", center.node]
    proc = run(show, env=slurm_env(center), timeout=10, check=False)
    match = re.search(r"SlurmdStartTime=(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)", proc.stdout)
    if proc.returncode != 0 or not match:
        return 0.0
    return time.mktime(time.strptime(match.group(1), "%Y-%m-%dT%H:%M:%S"))


def node_ready(center: CenterInfo, since: float | None = None) -> bool:
    """True when slurmd has registered (after `since`, if given); resumes a drained node.

    Without `since` a node the controller still remembers as idle would count as ready
    before a freshly started slurmd has registered. A node can also come back drained from
    saved state (e.g. a job's kill failed when a daemon was SIGKILLed); resuming it is part
    of repairing the testbed.
    """
    if since is not None and slurmd_start_time(center) < int(since):
        return False
    states = node_states(center)
    if states and states <= _RESPONSIVE:
        return True
    if any(re.sub(r"[^a-z]", "", s) in _NEEDS_RESUME and not s.endswith("*") for s in states):
        run(
            [which("scontrol"), "update", f"NodeName={center.node}", "State=RESUME"],
            env=slurm_env(center),
            check=False,
        )
    return False


def diagnose(center: CenterInfo, name: str) -> str:
    return f"{log_tail(center.launch_log(name), 5)}{log_tail(center.logfile(name))}"


def wait_serving(center: CenterInfo, name: str, timeout: float, since: float | None = None) -> None:
    """Wait until the daemon serves; `since`: when slurmd was launched (see node_ready)."""

    def alive_and(check: Callable[[], bool]) -> Callable[[], bool]:
        def condition() -> bool:
            if daemon_pid(center, name) is None:
                raise TestbedError(f"{name} of {center.id} exited at start{diagnose(center, name)}")
            return bool(check())

        return condition

    if name == "slurmctld":
        wait_until(
            alive_and(lambda: ctld_answers(center)),
            timeout,
            f"slurmctld of {center.id} to answer on port {center.slurmctld_port}",
            lambda: diagnose(center, name),
        )
    else:
        wait_until(
            alive_and(lambda: node_ready(center, since)),
            timeout,
            f"slurmd of {center.id}: node {center.node} to be idle in sinfo",
            lambda: (
                f" (sinfo says {sorted(node_states(center))})"
                + diagnose(center, name)
                + diagnose(center, "slurmctld")
            ),
        )


def reconfigure(center: CenterInfo) -> None:
    run([which("scontrol"), "reconfigure"], env=slurm_env(center), timeout=10, check=False)


def cancel_all_jobs(center: CenterInfo) -> None:
    """Best effort, before a stop: leaves no job to be resumed half-dead on the next up."""
    env = slurm_env(center)
    proc = run([which("squeue"), "-h", "-o", "%i"], env=env, timeout=5, check=False)
    ids = proc.stdout.split() if proc.returncode == 0 else []
    if ids:
        run([which("scancel"), *ids], env=env, timeout=5, check=False)
