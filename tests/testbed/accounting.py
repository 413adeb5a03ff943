"""The accounting side of a center: MariaDB, slurmdbd and the center's associations.

Facts this rests on (Slurm 22.05, MariaDB 10.11, Debian packages `slurmdbd
mariadb-server`):
- MariaDB runs as the `mysql` user on its own datadir, socket and loopback port under
  the center's directory; `mariadb-install-db` creates the datadir once (~1 s).
- slurmdbd has no option naming its config: it reads `slurmdbd.conf` from the
  directory of `$SLURM_CONF`, and refuses it unless it is mode 600 and owned by
  SlurmUser (root here).
- slurmdbd binds 0.0.0.0 on DbdPort whatever DbdAddr says (harmless on a host that is
  reachable on loopback only; tests/testbed/README.md says so).
- The cluster, QoS, accounts and users must exist in the database before slurmctld
  starts with `AccountingStorageEnforce=associations,limits,qos`.
"""

from __future__ import annotations

import os
import pwd
import secrets
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from tests.testbed.centers import USERS, CenterInfo
from tests.testbed.procs import (
    TestbedError,
    all_pids,
    cmdline,
    environ_has,
    log_tail,
    read_pidfile,
    run,
    spawn,
    terminate,
    wait_until,
    which,
)

DB_NAME = "slurm_acct_db"
DB_USER = "slurm"


@dataclass(frozen=True)
class Account:
    name: str
    grp_tres: str = ""  # e.g. "cpu=2": the most the account's running jobs may hold at once


@dataclass(frozen=True)
class Qos:
    name: str
    max_wall: str = ""  # e.g. "00:10:00"
    # Refuse a job over the QoS's limits at submit time instead of leaving it pending
    # for ever (the reason then names the limit, e.g. QOSMaxWallDurationPerJobLimit).
    flags: str = "DenyOnLimit"


@dataclass(frozen=True)
class Member:
    user: str
    accounts: tuple[str, ...]  # the first is the user's default account
    qos: tuple[str, ...] = ("normal", "short")  # the first is the default QoS


#: What the accounting center's database holds. `physics` is limited to 2 CPUs at a
#: time (the node has 4); `chemistry` has no low limit; QoS `short` allows 10 minutes
#: and refuses longer jobs at submit time; `normal` (Slurm's own) has no limits.
ACCOUNTS: tuple[Account, ...] = (Account("physics", "cpu=2"), Account("chemistry"))
QOS: tuple[Qos, ...] = (Qos("short", "00:10:00"),)
MEMBERS: tuple[Member, ...] = (
    Member("alice", ("physics", "chemistry")),
    Member("bob", ("chemistry",)),
)
assert {m.user for m in MEMBERS} == set(USERS), "every job user needs an association"


# ---------------------------------------------------------------- paths


def db_dir(center: CenterInfo) -> Path:
    return center.dir / "mariadb"


def my_cnf(center: CenterInfo) -> Path:
    return center.dir / "my.cnf"


def db_socket(center: CenterInfo) -> Path:
    return db_dir(center) / "mysqld.sock"


def dbd_conf(center: CenterInfo) -> Path:
    # Not chosen: slurmdbd looks for it beside $SLURM_CONF.
    return center.slurm_conf.with_name("slurmdbd.conf")


def db_pidfile(center: CenterInfo) -> Path:
    # In the mysql user's own directory: mariadbd writes it after dropping root.
    return db_dir(center) / "mariadbd.pid"


def db_log(center: CenterInfo) -> Path:
    return db_dir(center) / "mariadbd.log"


def _password_file(center: CenterInfo) -> Path:
    return center.dir / "db.password"


def _mysql_ids() -> tuple[int, int]:
    try:
        entry = pwd.getpwnam("mysql")
    except KeyError:
        raise TestbedError(
            "user 'mysql' is missing: install the Debian package mariadb-server"
        ) from None
    return entry.pw_uid, entry.pw_gid


# ---------------------------------------------------------------- config files


def render_my_cnf(center: CenterInfo) -> str:
    d = db_dir(center)
    return "\n".join(
        [
            f"# MariaDB of the hpcfed testbed center {center.id}. Generated: edits are lost.",
            "[mysqld]",
            f"datadir={d}/data",
            f"socket={db_socket(center)}",
            f"pid-file={db_pidfile(center)}",
            f"log-error={db_log(center)}",
            f"port={center.db_port}",
            "bind-address=127.0.0.1",
            "skip-name-resolve",
            # slurmdbd asks for this (and logs "not recommended values" for the buffer
            # pool, whose recommended size matters only to a big database).
            "innodb_lock_wait_timeout=900",
            "[client]",
            f"socket={db_socket(center)}",
            "",
        ]
    )


def render_dbd_conf(center: CenterInfo, password: str) -> str:
    return "\n".join(
        [
            f"# slurmdbd of the hpcfed testbed center {center.id}. Generated: edits are lost.",
            "DbdHost=localhost",
            "DbdAddr=127.0.0.1",  # slurmdbd still binds 0.0.0.0 (see the module docstring)
            f"DbdPort={center.dbd_port}",
            "SlurmUser=root",
            "AuthType=auth/munge",
            f"PidFile={center.pidfile('slurmdbd')}",
            f"LogFile={center.logfile('slurmdbd')}",
            "StorageType=accounting_storage/mysql",
            "StorageHost=127.0.0.1",
            f"StoragePort={center.db_port}",
            f"StorageUser={DB_USER}",
            f"StoragePass={password}",
            f"StorageLoc={DB_NAME}",
            "",
        ]
    )


def slurm_conf_lines(center: CenterInfo) -> list[str]:
    """What slurm.conf of an accounting center says instead of 'no accounting'."""
    return [
        "JobAcctGatherType=jobacct_gather/linux",
        "AccountingStorageType=accounting_storage/slurmdbd",
        "AccountingStorageHost=localhost",
        f"AccountingStoragePort={center.dbd_port}",
        # Unknown accounts and QoS are refused at submit time, limits are enforced.
        "AccountingStorageEnforce=associations,limits,qos",
    ]


def write_configs(center: CenterInfo, write: Callable[[Path, str, int], bool]) -> set[str]:
    """my.cnf and slurmdbd.conf; returns the daemons whose config changed."""
    password_file = _password_file(center)
    if not password_file.exists():
        fd = os.open(password_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_urlsafe(24))
    password = password_file.read_text().strip()
    changed = set()
    if write(my_cnf(center), render_my_cnf(center), 0o644):
        changed.add("mariadbd")
    if write(dbd_conf(center), render_dbd_conf(center, password), 0o600):
        changed.add("slurmdbd")
    return changed


# ---------------------------------------------------------------- MariaDB


def mariadbd_pid(center: CenterInfo) -> int | None:
    marker = f"--defaults-file={my_cnf(center)}"

    def matches(cmd: str) -> bool:
        words = cmd.split(" ")
        return os.path.basename(words[0]) in ("mariadbd", "mysqld") and marker in words

    return _find(db_pidfile(center), matches)


def _find(
    pidfile: Path, matches: Callable[[str], bool], pid_ok: Callable[[int], bool] = bool
) -> int | None:
    pid = read_pidfile(pidfile)
    if pid is not None and matches(cmdline(pid)) and pid_ok(pid):
        return pid
    for candidate in all_pids():
        if matches(cmdline(candidate)) and pid_ok(candidate):
            return candidate
    return None


def launch_mariadbd(center: CenterInfo) -> None:
    """Create the datadir on first use and start the server (without waiting for it)."""
    uid, gid = _mysql_ids()
    home = db_dir(center)
    home.mkdir(mode=0o700, exist_ok=True)
    os.chown(home, uid, gid)
    if not (home / "data" / "mysql").is_dir():
        run(
            [
                which("mariadb-install-db"),
                f"--defaults-file={my_cnf(center)}",
                "--user=mysql",
                "--skip-test-db",
                # root logs in through the socket only, as root: no password to keep.
                "--auth-root-authentication-method=socket",
            ],
            timeout=60,
        )
    # mariadbd stays in the foreground; setsid --fork detaches it so spawn can reap the
    # launcher. It drops to the mysql user itself.
    argv = [which("setsid"), "--fork", which("mariadbd"), f"--defaults-file={my_cnf(center)}"]
    rc = spawn([*argv, "--user=mysql"], os.environ, center.launch_log("mariadbd"))
    if rc != 0:
        raise TestbedError(
            f"mariadbd of {center.id} exited {rc} at start{diagnose(center, 'mariadbd')}"
        )
    # setsid has forked: until the child has exec'd mariadbd, no process matches yet.
    wait_until(
        lambda: mariadbd_pid(center) is not None,
        10,
        f"mariadbd of {center.id} to start",
        lambda: diagnose(center, "mariadbd"),
    )


def _sql(center: CenterInfo, statement: str) -> str:
    argv = [which("mariadb"), f"--defaults-file={my_cnf(center)}", "-u", "root", "-N", "-B"]
    return run([*argv, "-e", statement], timeout=20).stdout


def wait_mariadbd(center: CenterInfo, timeout: float) -> None:
    def serving() -> bool:
        if mariadbd_pid(center) is None:
            raise TestbedError(
                f"mariadbd of {center.id} exited at start{diagnose(center, 'mariadbd')}"
            )
        if not db_socket(center).exists():
            return False
        argv = [which("mariadb-admin"), f"--defaults-file={my_cnf(center)}", "-u", "root"]
        return run([*argv, "ping"], timeout=5, check=False).returncode == 0

    wait_until(
        serving,
        timeout,
        f"MariaDB of {center.id} to answer on {db_socket(center)}",
        lambda: diagnose(center, "mariadbd"),
    )


def ensure_database(center: CenterInfo) -> None:
    """slurmdbd's database and user (for both ways it may connect); idempotent."""
    password = _password_file(center).read_text().strip()
    quoted = password.replace("\\", "\\\\").replace("'", "\\'")
    hosts = ("localhost", "127.0.0.1")
    statements = [f"CREATE DATABASE IF NOT EXISTS {DB_NAME}"]
    for host in hosts:
        account = f"'{DB_USER}'@'{host}'"
        statements += [
            f"CREATE USER IF NOT EXISTS {account} IDENTIFIED BY '{quoted}'",
            # A password file rewritten since: the user follows it.
            f"ALTER USER {account} IDENTIFIED BY '{quoted}'",
            f"GRANT ALL ON {DB_NAME}.* TO {account}",
        ]
    _sql(center, "; ".join(statements))


# ---------------------------------------------------------------- slurmdbd


def slurmdbd_pid(center: CenterInfo) -> int | None:
    # slurmdbd's command line names no config; its environment's SLURM_CONF does.
    needle = f"SLURM_CONF={center.slurm_conf}\0".encode()

    def matches(cmd: str) -> bool:
        return os.path.basename(cmd.split(" ", 1)[0]) == "slurmdbd"

    return _find(center.pidfile("slurmdbd"), matches, lambda pid: environ_has(pid, needle))


def launch_slurmdbd(center: CenterInfo, prefix: tuple[str, ...]) -> None:
    pidfile = center.pidfile("slurmdbd")
    # Like slurmctld, slurmdbd signals the pid in a stale pid file at start.
    if pidfile.exists() and slurmdbd_pid(center) != read_pidfile(pidfile):
        pidfile.unlink()
    env = dict(os.environ, SLURM_CONF=str(center.slurm_conf))
    rc = spawn([*prefix, which("slurmdbd")], env, center.launch_log("slurmdbd"), cwd=center.dir)
    if rc != 0:
        raise TestbedError(
            f"slurmdbd of {center.id} exited {rc} at start{diagnose(center, 'slurmdbd')}"
        )


def _sacctmgr(center: CenterInfo, *args: str, input_data: str | None = None) -> str:
    env = dict(os.environ, SLURM_CONF=str(center.slurm_conf))
    return run([which("sacctmgr"), *args], env=env, timeout=30, input_data=input_data).stdout


def wait_slurmdbd(center: CenterInfo, timeout: float) -> None:
    env = dict(os.environ, SLURM_CONF=str(center.slurm_conf))

    def serving() -> bool:
        if slurmdbd_pid(center) is None:
            raise TestbedError(
                f"slurmdbd of {center.id} exited at start{diagnose(center, 'slurmdbd')}"
            )
        probe = [which("sacctmgr"), "-nP", "show", "cluster", "format=Cluster"]
        return run(probe, env=env, timeout=10, check=False).returncode == 0

    wait_until(
        serving,
        timeout,
        f"slurmdbd of {center.id} to answer on port {center.dbd_port}",
        lambda: diagnose(center, "slurmdbd"),
    )


def _rows(text: str) -> list[list[str]]:
    return [line.split("|") for line in text.splitlines() if line.strip()]


def missing_setup(center: CenterInfo, clusters: str, qos: str, assocs: str) -> list[str]:
    """sacctmgr commands for what the database lacks (or holds differently), from
    `show cluster`, `show qos format=Name,MaxWall,Flags` and `show assoc
    format=Cluster,Account,User,GrpTRES,QOS,DefaultQOS` output (-nP)."""
    commands = []
    if center.id not in {r[0] for r in _rows(clusters)}:
        commands.append(f"add cluster {center.id}")
    have_qos = {r[0]: tuple(r[1:3]) for r in _rows(qos) if len(r) >= 3}
    for wanted in QOS:
        settings = f"MaxWall={wanted.max_wall} Flags={wanted.flags}"
        if wanted.name not in have_qos:
            commands.append(f"add qos {wanted.name} {settings}")
        elif have_qos[wanted.name] != (wanted.max_wall, wanted.flags):
            commands.append(f"modify qos where name={wanted.name} set {settings}")
    rows = [r for r in _rows(assocs) if r[0] == center.id and len(r) >= 6]
    accounts = {r[1]: r[3] for r in rows if not r[2]}
    users = {(r[2], r[1]): (r[4], r[5]) for r in rows if r[2]}
    for account in ACCOUNTS:
        limit = account.grp_tres or "cpu=-1"
        if account.name not in accounts:
            grp = f" GrpTRES={account.grp_tres}" if account.grp_tres else ""
            commands.append(
                f"add account {account.name} Cluster={center.id} Description={account.name} "
                f"Organization=testbed{grp}"
            )
        elif accounts[account.name] != account.grp_tres:
            commands.append(
                f"modify account where name={account.name} cluster={center.id} set GrpTRES={limit}"
            )
    for member in MEMBERS:
        wanted_qos = (",".join(sorted(member.qos)), member.qos[0])
        missing = [a for a in member.accounts if (member.user, a) not in users]
        if missing:
            # One command for all of them: each sacctmgr command costs ~0.7 s here.
            commands.append(
                f"add user {member.user} Account={','.join(missing)} Cluster={center.id} "
                f"DefaultAccount={member.accounts[0]} QOS={','.join(member.qos)} "
                f"DefaultQOS={member.qos[0]}"
            )
        for account in member.accounts:
            found = users.get((member.user, account))
            if found is None:
                continue
            if (",".join(sorted(found[0].split(","))), found[1]) != wanted_qos:
                commands.append(
                    f"modify user where name={member.user} account={account} "
                    f"cluster={center.id} set QOS={','.join(member.qos)} "
                    f"DefaultQOS={member.qos[0]}"
                )
    return commands


def ensure_associations(center: CenterInfo) -> list[str]:
    """Add what is missing of the cluster, QoS, accounts and users; returns what it ran."""
    # The three at once: each is a round trip to slurmdbd (~0.35 s), and `up` waits.
    with ThreadPoolExecutor(3) as pool:
        clusters, qos, assocs = pool.map(
            lambda words: _sacctmgr(center, "-nP", "show", *words),
            [
                ("cluster", "format=Cluster"),
                ("qos", "format=Name,MaxWall,Flags"),
                ("assoc", "format=Cluster,Account,User,GrpTRES,QOS,DefaultQOS"),
            ],
        )
    commands = missing_setup(center, clusters, qos, assocs)
    if commands:
        # One sacctmgr for all of them: each separate call costs ~0.5 s.
        script = "\n".join(commands) + "\n"
        _sacctmgr(center, "-i", input_data=script)
    return commands


# ---------------------------------------------------------------- both


def diagnose(center: CenterInfo, name: str) -> str:
    log = db_log(center) if name == "mariadbd" else center.logfile(name)
    return f"{log_tail(center.launch_log(name), 5)}{log_tail(log)}"


def stop(pid: int | None) -> None:
    if pid is not None:
        # MariaDB flushes its buffers on SIGTERM; give it the time to.
        terminate([pid], timeout=20)
