"""The Testbed: brings the four centers up or down, idempotently, and reports on them."""

from __future__ import annotations

import contextlib
import fcntl
import os
import stat
import time
from collections.abc import Iterator
from pathlib import Path

from tests.testbed import accounting, apps, postgres, slurm, sshd, status_filter
from tests.testbed.centers import (
    ALL_LOGINS,
    CENTER_IDS,
    GATEWAY_LOGIN,
    CenterInfo,
    make_centers,
)
from tests.testbed.gatewayfiles import write_gateway_files
from tests.testbed.procs import (
    TestbedError,
    all_pids,
    check_prerequisites,
    cmdline,
    descendants,
    environ_has,
    own_lineage,
    port_is_free,
    terminate,
    write_if_changed,
)

DEFAULT_BASE = Path("/tmp/hpcfed-testbed")
CTLD_TIMEOUT = 15.0
SLURMD_TIMEOUT = 20.0
SSHD_TIMEOUT = 10.0
LOGIN_TIMEOUT = 20.0
MARIADB_TIMEOUT = 30.0
SLURMDBD_TIMEOUT = 20.0
POSTGRES_TIMEOUT = 30.0


class Testbed:
    """Four real centers on loopback: Slurm CPU, Slurm GPU, Slurm behind PBS commands, and
    Slurm with accounting (slurmdbd on MariaDB); and a PostgreSQL for the gateway's state."""

    __test__ = False  # not a pytest test class, despite the name

    def __init__(self, base: Path | str | None = None) -> None:
        chosen = base or os.environ.get("HPCFED_TESTBED_DIR") or DEFAULT_BASE
        self.base = Path(chosen).absolute()
        self._centers = make_centers(self.base)
        self._binding: slurm.Binding | None = None
        self._launched_at: dict[tuple[str, str], float] = {}

    # ------------------------------------------------------------ paths and facts

    @property
    def center_ids(self) -> tuple[str, ...]:
        return CENTER_IDS

    @property
    def gateway_config(self) -> Path:
        return self.base / "gateway" / "gateway.yaml"

    @property
    def known_hosts(self) -> Path:
        return self.base / "known_hosts"

    @property
    def _munge_marker(self) -> Path:
        return self.base / "munged.started"

    @property
    def binding(self) -> slurm.Binding:
        if self._binding is None:
            self._binding = slurm.choose_binding()
        return self._binding

    def center(self, cid: str) -> CenterInfo:
        try:
            return self._centers[cid]
        except KeyError:
            raise ValueError(f"unknown center {cid!r}; the testbed has {CENTER_IDS}") from None

    def user_key(self, user: str) -> Path:
        if user not in ALL_LOGINS:
            raise ValueError(f"unknown user {user!r}; the testbed has {ALL_LOGINS}")
        return self.base / "keys" / f"{user}_key"

    def host_key(self, cid: str) -> str:
        """The center's pinned host key, 'ssh-ed25519 AAAA...'."""
        center = self.center(cid)
        return sshd.public_key(center.host_key_file.with_name(center.host_key_file.name + ".pub"))

    def scheduler_env(self, cid: str) -> dict[str, str]:
        """os.environ plus SLURM_CONF, to run squeue/scontrol/qstat here against `cid`."""
        return slurm.slurm_env(self.center(cid))

    def ssh_command(self, cid: str, *remote: str, user: str = GATEWAY_LOGIN) -> list[str]:
        """argv of an OpenSSH client running `remote` as `user` at `cid`, host key pinned."""
        return sshd.ssh_argv(self.center(cid), self.user_key(user), self.known_hosts, user, remote)

    # ------------------------------------------------------------ up

    def up(self) -> None:
        """Start whatever is missing and wait until every center serves; idempotent."""
        check_prerequisites()
        postgres.bin_dir()  # TestbedUnavailable naming the package if it is missing
        with self._locked():
            changed = self._prepare()
            apps.install(self.center(cid) for cid in CENTER_IDS)  # Lmod trees (apps.py)
            # PostgreSQL is launched first and waited for last: it starts while Slurm does.
            if postgres.prepare(self.base) and postgres.running(self.base):
                postgres.stop_server(self.base)  # running on an outdated config
            if not postgres.running(self.base):
                postgres.launch(self.base)
            slurm.ensure_munged(self._munge_marker)
            centers = [self.center(cid) for cid in CENTER_IDS]
            for center in centers:
                for name in center.daemons:
                    if (center.id, name) in changed and self._pid(center, name) is not None:
                        self._stop(center, name)  # running on an outdated config
            plain = [c for c in centers if not c.accounting]
            with_accounting = [c for c in centers if c.accounting]
            # Controllers first, so that each slurmd registers as soon as it starts. MariaDB
            # is launched before them and waited for after; an accounting center's
            # slurmctld starts only once its slurmdbd serves and holds the associations
            # it enforces.
            self._launch_missing(with_accounting, ("mariadbd",))
            fresh = self._launch_missing(plain, ("slurmctld",))
            for center in with_accounting:
                self._start_accounting(center)
            fresh |= self._launch_missing(with_accounting, ("slurmctld",))
            for center in centers:
                slurm.wait_serving(center, "slurmctld", CTLD_TIMEOUT)
                if (center.id, "slurmctld") in fresh:
                    self._reregister(center)
            self._launch_missing(centers, ("slurmd", "sshd"))
            for center in centers:
                sshd.wait_sshd(center, SSHD_TIMEOUT)
            for center in centers:
                since = self._launched_at.pop((center.id, "slurmd"), None)
                slurm.wait_serving(center, "slurmd", SLURMD_TIMEOUT, since)
            self._check_logins()
            postgres.wait_serving(self.base, POSTGRES_TIMEOUT)
            postgres.ensure_role_and_database(self.base)

    def _start_accounting(self, center: CenterInfo) -> None:
        """MariaDB serving, slurmdbd's database and user, slurmdbd, and the associations."""
        accounting.wait_mariadbd(center, MARIADB_TIMEOUT)
        accounting.ensure_database(center)
        self._launch_missing([center], ("slurmdbd",))
        accounting.wait_slurmdbd(center, SLURMDBD_TIMEOUT)
        accounting.ensure_associations(center)

    def _prepare(self) -> set[tuple[str, str]]:
        """Dirs, users, keys, config files; returns the (center, daemon) whose config changed."""
        self._make_dir(self.base, 0o755)
        self._check_reachable()
        keys = self._make_dir(self.base / "keys", 0o700)
        user_keys = {
            u: sshd.ensure_keypair(keys / f"{u}_key", f"hpcfed-testbed-{u}") for u in ALL_LOGINS
        }
        for user, key in user_keys.items():
            sshd.authorize(sshd.ensure_user(user), key)
        changed: set[tuple[str, str]] = set()
        for cid in CENTER_IDS:
            center = self.center(cid)
            self._make_dir(center.dir, 0o755)
            self._make_dir(center.dir / "state", 0o700)
            self._make_dir(center.dir / "spool", 0o755)
            sshd.ensure_keypair(center.host_key_file, "")
            slurm.make_fake_gpus(center)
            conf = write_if_changed(
                center.slurm_conf, slurm.render_slurm_conf(center, self.binding)
            )
            gres = write_if_changed(center.dir / "gres.conf", slurm.render_gres_conf(center))
            if conf or gres:
                changed |= {(cid, "slurmctld"), (cid, "slurmd")}
            if center.accounting:
                changed |= {(cid, d) for d in accounting.write_configs(center, write_if_changed)}
            status_filter.install(center)
            sshd_conf = sshd.render_sshd_config(center, center.logins)
            if write_if_changed(center.sshd_config, sshd_conf, 0o600):
                changed.add((cid, "sshd"))
        known_hosts = "".join(sshd.known_hosts_line(self.center(c)) + "\n" for c in CENTER_IDS)
        write_gateway_files(
            self.base,
            [(self.center(cid), self.host_key(cid)) for cid in CENTER_IDS],
            {user: self.user_key(user) for user in ALL_LOGINS},
            known_hosts,
        )
        return changed

    @staticmethod
    def _make_dir(path: Path, mode: int) -> Path:
        path.mkdir(mode=mode, parents=True, exist_ok=True)
        # Also fixes a leftover directory with other modes: the job users must be able to
        # read the configs but never write them.
        path.chmod(mode)
        return path

    def _check_reachable(self) -> None:
        """Job users read slurm.conf under the base dir: every ancestor must be searchable."""
        for parent in self.base.parents:
            if not parent.stat().st_mode & stat.S_IXOTH:
                raise TestbedError(
                    f"{self.base} is not reachable for the job users: {parent} is not "
                    "searchable by others; choose another HPCFED_TESTBED_DIR"
                )

    def _launch_missing(
        self, centers: list[CenterInfo], names: tuple[str, ...]
    ) -> set[tuple[str, str]]:
        launched = set()
        for center in centers:
            for name in names:
                if self._pid(center, name) is None:
                    self._launch(center, name)
                    launched.add((center.id, name))
        return launched

    def _reregister(self, center: CenterInfo) -> None:
        """After a controller restart, have a surviving slurmd register now.

        Otherwise the node stays 'unknown' until the controller's next ping round (~4 s).
        """
        if self._pid(center, "slurmd") is not None:
            slurm.reconfigure(center)

    def _launch(self, center: CenterInfo, name: str) -> None:
        port = {
            "slurmctld": center.slurmctld_port,
            "slurmd": center.slurmd_port,
            "sshd": center.ssh_port,
            "slurmdbd": center.dbd_port,
            "mariadbd": center.db_port,
        }[name]
        assert port is not None, f"{center.id} has no {name}"
        if not port_is_free(port):
            raise TestbedError(
                f"cannot start {name} of {center.id}: port {port} is taken by another process "
                "(see `ss -ltnp`)"
            )
        self._launched_at[center.id, name] = time.time()
        if name == "sshd":
            sshd.launch_sshd(center)
        elif name == "mariadbd":
            accounting.launch_mariadbd(center)
        elif name == "slurmdbd":
            accounting.launch_slurmdbd(center, self.binding.prefix)
        else:
            slurm.launch(center, name, self.binding)

    def _check_logins(self) -> None:
        logins = []
        for cid in CENTER_IDS:
            center = self.center(cid)
            probe = ["qstat", "-Q"] if center.kind == "pbs" else ["sinfo", "-h"]
            logins += [(center, self.ssh_command(cid, *probe, user=user)) for user in center.logins]
        sshd.check_logins(logins, LOGIN_TIMEOUT)

    # ------------------------------------------------------------ single daemons

    def start_daemon(self, cid: str, name: str) -> None:
        """Start one daemon if it is not running, and wait until it serves (for
        slurmctld: until its node is back and idle, so jobs can run at once)."""
        center = self.center(cid)
        name = self._daemon_name(center, name)
        with self._locked():
            fresh = self._pid(center, name) is None
            if fresh:
                self._launch(center, name)
            if name == "mariadbd":
                accounting.wait_mariadbd(center, MARIADB_TIMEOUT)
            elif name == "slurmdbd":
                accounting.wait_slurmdbd(center, SLURMDBD_TIMEOUT)
            elif name == "sshd":
                sshd.wait_sshd(center, SSHD_TIMEOUT)
            else:
                timeout = CTLD_TIMEOUT if name == "slurmctld" else SLURMD_TIMEOUT
                since = self._launched_at.pop((center.id, name), None)
                slurm.wait_serving(center, name, timeout, since if name == "slurmd" else None)
                if fresh and name == "slurmctld":
                    self._reregister(center)
                if name == "slurmctld":
                    slurm.wait_serving(center, "slurmd", SLURMD_TIMEOUT)

    def stop_daemon(self, cid: str, name: str) -> None:
        """Stop one daemon (SIGTERM, then SIGKILL); running jobs survive a slurmd stop."""
        center = self.center(cid)
        name = self._daemon_name(center, name)
        with self._locked():
            self._stop(center, name)

    @staticmethod
    def _daemon_name(center: CenterInfo, name: str) -> str:
        if name not in center.daemons:
            raise ValueError(f"unknown daemon {name!r} of {center.id}; one of {center.daemons}")
        return name

    def daemon_pid(self, cid: str, name: str) -> int | None:
        """The pid of a running daemon of `cid`, or None."""
        center = self.center(cid)
        return self._pid(center, self._daemon_name(center, name))

    def _pid(self, center: CenterInfo, name: str) -> int | None:
        if name == "sshd":
            return sshd.sshd_pid(center)
        if name == "mariadbd":
            return accounting.mariadbd_pid(center)
        if name == "slurmdbd":
            return accounting.slurmdbd_pid(center)
        return slurm.daemon_pid(center, name)

    def _stop(self, center: CenterInfo, name: str) -> None:
        pid = self._pid(center, name)
        if pid is None:
            return
        # For sshd the open sessions go too, as when a login node goes away.
        victims = [pid, *descendants(pid)] if name == "sshd" else [pid]
        # MariaDB flushes its buffers on SIGTERM, which may take a while.
        terminate(victims, timeout=20 if name == "mariadbd" else 10)

    # ------------------------------------------------------------ status answers that lose jobs

    def drop_from_status(self, cid: str, native_ids: list[str] | tuple[str, ...]) -> None:
        """From now on `squeue` and `qstat` at `cid` leave these jobs out of their output
        (`tests.testbed.status_filter`); the scheduler itself still runs them."""
        status_filter.drop(self.center(cid), native_ids)

    def drop_all_but_first(self, cid: str) -> None:
        """`squeue` and `qstat` at `cid` list only the first job of their answer."""
        status_filter.set_mode(self.center(cid), "all-but-first")

    def hang_submissions(self, cid: str) -> None:
        """`sbatch` and `qsub` at `cid` hang, then fail without submitting anything."""
        status_filter.hang_submissions(self.center(cid))

    def restore_status(self, cid: str) -> None:
        """`squeue` and `qstat` at `cid` answer in full again, and its submissions work."""
        status_filter.restore(self.center(cid))

    # ------------------------------------------------------------ down and status

    def down(self) -> None:
        """Stop every testbed process; keys, configs and state stay for the next up."""
        if not self.base.exists():
            return
        with self._locked():
            for cid in CENTER_IDS:
                center = self.center(cid)
                if self._pid(center, "slurmctld") is not None:
                    slurm.cancel_all_jobs(center)
            for cid in CENTER_IDS:
                # The reverse of the start order: the database goes last.
                for name in reversed(self.center(cid).daemons):
                    self._stop(self.center(cid), name)
                status_filter.restore(self.center(cid))
            # Before the sweep, which would kill it (its command line names the base dir)
            # without the clean shutdown.
            postgres.stop_server(self.base)
            self._sweep()
            slurm.stop_munged(self._munge_marker)

    def _sweep(self) -> None:
        """Kill leftovers: anything naming the base dir, e.g. job steps and their processes.

        Jobs inherit SLURM_CONF (set by the centers' sshd) in their environment, which is
        how stray job processes of this testbed are recognized.
        """
        marker = str(self.base) + "/"
        spare = own_lineage()
        leftovers = [
            pid
            for pid in all_pids()
            if pid not in spare
            and (marker in cmdline(pid) or environ_has(pid, f"SLURM_CONF={marker}".encode()))
        ]
        if leftovers:
            terminate(leftovers)

    def status(self) -> dict[str, dict[str, bool]]:
        return {
            cid: {
                name: self._pid(self.center(cid), name) is not None
                for name in self.center(cid).daemons
            }
            for cid in CENTER_IDS
        }

    def services(self) -> dict[str, bool]:
        """Whether each service beside the centers runs: {"postgres": ...}."""
        return {"postgres": postgres.running(self.base)}

    def munge_ok(self) -> bool:
        return slurm.munge_works()

    def is_up(self) -> bool:
        states = self.status()
        centers_up = all(all(daemons.values()) for daemons in states.values())
        return centers_up and self.munge_ok() and all(self.services().values())

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Serializes up/down/start/stop across processes (e.g. parallel test workers)."""
        self._make_dir(self.base, 0o755)
        with open(self.base / ".lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)
