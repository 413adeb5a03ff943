"""The testbed itself: idempotent start, self-repair, and real jobs through each center's sshd."""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import psycopg
import pytest
import yaml

from gateway.centers.config import CenterConfig
from gateway.config_models import GatewayConfig
from gateway.identity.vault import Vault, ssh_key_name
from tests.testbed import Testbed, TestbedError, TestbedUnavailable
from tests.testbed import postgres as pg
from tests.testbed.haproxy import EXAMPLE_CONFIG, HAProxy
from tests.testbed.procs import all_pids, cmdline, descendants

pytestmark = pytest.mark.integration

JOB_TIMEOUT = 30.0
T = TypeVar("T")


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


@pytest.fixture(scope="module")
def testbed() -> Iterator[Testbed]:
    tb = Testbed()
    try:
        tb.up()
    except TestbedUnavailable as exc:
        # On a developer machine without the packages this is a skip; in CI the Makefile
        # installs them, so an unavailable testbed there is a broken build.
        if _in_ci():
            pytest.fail(f"testbed unavailable under CI: {exc}")
        pytest.skip(f"testbed unavailable: {exc}")
    except TestbedError as exc:
        pytest.fail(f"testbed failed to start: {exc}")
    yield tb


def ssh(tb: Testbed, cid: str, remote: str, user: str = "alice") -> str:
    """Run one remote shell command over OpenSSH with the pinned host key; returns stdout."""
    proc = subprocess.run(
        tb.ssh_command(cid, remote, user=user),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, f"{remote!r} at {cid} exited {proc.returncode}: {proc.stderr}"
    return proc.stdout


def wait_for(condition: Callable[[], T], timeout: float, what: str) -> T:
    deadline = time.monotonic() + timeout
    while not (result := condition()):
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.1)
    return result


def job_state(tb: Testbed, cid: str, job_id: str) -> str:
    proc = subprocess.run(
        ["scontrol", "show", "job", job_id],
        env=tb.scheduler_env(cid),
        capture_output=True,
        text=True,
        check=False,
    )
    for word in proc.stdout.split():
        if word.startswith("JobState="):
            return word.split("=", 1)[1]
    return ""


def wait_job_done(tb: Testbed, cid: str, job_id: str) -> str:
    done = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY"}
    return wait_for(
        lambda: (state := job_state(tb, cid, job_id)) in done and state,
        JOB_TIMEOUT,
        f"job {job_id} at {cid} to finish",
    )


def test_up_twice_is_harmless(testbed: Testbed) -> None:
    pids = {
        (c, d): testbed.daemon_pid(c, d)
        for c in testbed.center_ids
        for d in testbed.center(c).daemons
    }
    assert ("centerd", "mariadbd") in pids and ("centerd", "slurmdbd") in pids
    started = time.monotonic()
    testbed.up()
    assert time.monotonic() - started < 10, "a warm up should only check, not restart"
    assert {(c, d): testbed.daemon_pid(c, d) for c, d in pids} == pids
    assert testbed.is_up()
    assert all(all(daemons.values()) for daemons in testbed.status().values())


def test_up_restores_a_killed_daemon(testbed: Testbed) -> None:
    pid = testbed.daemon_pid("centera", "slurmd")
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not testbed.status()["centera"]["slurmd"], 10, "slurmd to die")
    assert not testbed.is_up()

    testbed.up()

    assert testbed.status()["centera"]["slurmd"]
    assert testbed.daemon_pid("centera", "slurmd") not in (None, pid)
    node = testbed.center("centera").node
    states = subprocess.run(
        ["sinfo", "-h", "-N", "-n", node, "-o", "%T"],
        env=testbed.scheduler_env("centera"),
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert states and set(states) <= {"idle", "mixed", "allocated"}, states


def test_sbatch_over_ssh_runs_as_the_login_user(testbed: Testbed) -> None:
    job_id = ssh(testbed, "centera", "sbatch --parsable --wrap whoami").strip()
    assert job_id.isdigit(), job_id
    assert wait_job_done(testbed, "centera", job_id) == "COMPLETED"
    output = ssh(testbed, "centera", f"cat slurm-{job_id}.out && rm -f slurm-{job_id}.out")
    assert output.strip() == "alice"


def test_jobs_of_another_user_run_as_that_user(testbed: Testbed) -> None:
    submit = shlex.join(["sbatch", "--parsable", "--partition=long", "--wrap", "id -un"])
    job_id = ssh(testbed, "centera", submit, user="bob").strip()
    assert wait_job_done(testbed, "centera", job_id) == "COMPLETED"
    output = ssh(
        testbed, "centera", f"cat slurm-{job_id}.out && rm -f slurm-{job_id}.out", user="bob"
    )
    assert output.strip() == "bob"


def test_gpu_gres_gives_the_job_two_devices(testbed: Testbed) -> None:
    submit = shlex.join(
        ["sbatch", "--parsable", "--gres=gpu:a100:2", "--wrap", "echo $CUDA_VISIBLE_DEVICES"]
    )
    job_id = ssh(testbed, "centerb", submit).strip()
    assert wait_job_done(testbed, "centerb", job_id) == "COMPLETED"
    output = ssh(testbed, "centerb", f"cat slurm-{job_id}.out && rm -f slurm-{job_id}.out")
    devices = output.strip().split(",")
    assert len(devices) == 2, output


def test_qsub_and_qstat_on_the_pbs_center(testbed: Testbed) -> None:
    workdir = ssh(testbed, "centerc", "mktemp -d").strip()
    script = "#!/bin/sh\n#PBS -N tbprobe\n#PBS -l walltime=00:05:00\nsleep 30\n"
    submit = f"cd {workdir} && printf %s {shlex.quote(script)} > probe.pbs && qsub probe.pbs"
    job_id = ssh(testbed, "centerc", submit).strip()
    try:
        assert job_id.isdigit(), f"Slurm's Torque qsub prints the bare job id, got {job_id!r}"
        listing = ssh(testbed, "centerc", f"qstat {job_id}")
        assert any(line.split()[:1] == [job_id] for line in listing.splitlines()), listing
        full = ssh(testbed, "centerc", f"qstat -f {job_id}")
        assert f"Job Id:\t{job_id}" in full
        assert "Job_Name = tbprobe" in full
        assert any(f"job_state = {s}" in full for s in "QR"), full
    finally:
        ssh(testbed, "centerc", f"qdel {job_id}; rm -rf {workdir}")


def test_gateway_files_validate_against_the_models(testbed: Testbed) -> None:
    gateway = GatewayConfig.model_validate(yaml.safe_load(testbed.gateway_config.read_text()))
    assert Path(gateway.data_dir) == testbed.base / "gateway" / "data"
    assert (gateway.listen.host, gateway.listen.port) == ("127.0.0.1", 0)
    assert gateway.poll_interval == 0.5
    assert gateway.auth.bootstrap_user is None

    files = sorted(
        path
        for pattern in gateway.center_files
        for path in testbed.gateway_config.parent.glob(pattern)
    )
    centers = {
        config.id: config
        for config in (CenterConfig.model_validate(yaml.safe_load(p.read_text())) for p in files)
    }
    assert set(centers) == {"centera", "centerb", "centerc", "centerd", "local"}
    vault = Vault.open(gateway.vault, Path)
    assert centers["local"].type == "local"
    known_hosts = testbed.known_hosts.read_text().splitlines()
    for cid in testbed.center_ids:
        config, info = centers[cid], testbed.center(cid)
        assert config.type == info.kind
        assert config.ssh is not None
        assert (config.ssh.host, config.ssh.port) == ("127.0.0.1", info.ssh_port)
        assert config.ssh.login == "alice"
        assert {u: i.login for u, i in config.users.items()} == {u: u for u in info.logins}
        for user in info.logins:
            stored = vault.get(ssh_key_name(cid, user))
            assert stored == testbed.user_key(user).read_bytes()
        assert config.ssh.host_keys == [testbed.host_key(cid)]
        assert config.scheduler.work_root == "~/.hpcfed"
        assert f"[127.0.0.1]:{info.ssh_port} {testbed.host_key(cid)}" in known_hosts
    assert centers["centerc"].scheduler.pbs_dialect == "torque"


def sacctmgr(tb: Testbed, *args: str) -> str:
    proc = subprocess.run(
        ["sacctmgr", "-nP", *args],
        env=tb.scheduler_env("centerd"),
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return proc.stdout


def test_accounting_center_enforces_its_associations(testbed: Testbed) -> None:
    center = testbed.center("centerd")
    assert center.accounting and center.unassociated == ("dora",)
    conf = center.slurm_conf.read_text()
    assert "AccountingStorageEnforce=associations,limits,qos" in conf
    assert "JobAcctGatherType=jobacct_gather/linux" in conf
    dbd_conf = center.slurm_conf.with_name("slurmdbd.conf")
    mode = dbd_conf.stat()
    assert (mode.st_mode & 0o777, mode.st_uid) == (0o600, 0)
    assocs = sacctmgr(testbed, "show", "assoc", "format=Cluster,Account,User,GrpTRES")
    rows = {tuple(line.split("|")) for line in assocs.splitlines()}
    assert ("centerd", "physics", "", "cpu=2") in rows
    assert ("centerd", "physics", "alice", "") in rows
    assert ("centerd", "chemistry", "bob", "") in rows
    assert not [r for r in rows if r[2] == "dora"]
    qos = sacctmgr(testbed, "show", "qos", "format=Name,MaxWall,Flags")
    assert "short|00:10:00|DenyOnLimit" in qos.splitlines()
    # The login exists and logs in, but sbatch refuses every job of hers.
    assert ssh(testbed, "centerd", "whoami", user="dora").strip() == "dora"
    refused = subprocess.run(
        testbed.ssh_command("centerd", "sbatch --parsable --wrap true", user="dora"),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert refused.returncode == 1 and "Invalid account" in refused.stderr
    job_id = ssh(testbed, "centerd", "sbatch --parsable --wrap 'exit 3'").strip()
    assert wait_job_done(testbed, "centerd", job_id) == "FAILED"
    # slurmdbd records the job's states after slurmctld, each a moment later (PENDING,
    # RUNNING, then its end): wait for a record of its end.
    record = wait_for(
        lambda: (
            (line := sacct_line(testbed, job_id))
            and line.split("|")[1] not in SACCT_NOT_ENDED
            and line
        ),
        JOB_TIMEOUT,
        f"sacct to record how {job_id} ended",
    )
    assert record == f"{job_id}|FAILED|3:0|physics"


#: sacct states of a job that has not ended yet.
SACCT_NOT_ENDED = frozenset(
    {"PENDING", "RUNNING", "REQUEUED", "RESIZING", "SUSPENDED", "COMPLETING", "CONFIGURING"}
)


def sacct_line(tb: Testbed, job_id: str) -> str:
    proc = subprocess.run(
        ["sacct", "-X", "-n", "-P", "-j", job_id, "--format=JobID,State,ExitCode,Account"],
        env=tb.scheduler_env("centerd"),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    return proc.stdout.strip()


def test_up_restores_a_killed_slurmdbd_and_keeps_the_associations(testbed: Testbed) -> None:
    pid = testbed.daemon_pid("centerd", "slurmdbd")
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not testbed.status()["centerd"]["slurmdbd"], 10, "slurmdbd to die")
    assert not testbed.is_up()

    testbed.up()

    assert testbed.daemon_pid("centerd", "slurmdbd") not in (None, pid)
    assert "physics|alice" in sacctmgr(testbed, "show", "assoc", "format=Account,User")


# ---------------------------------------------------------------- PostgreSQL


def test_pg_dsn_is_an_empty_writable_database_of_hpcfed(pg_dsn: str, postgres: pg.Server) -> None:
    assert "@127.0.0.1:25432/" in pg_dsn and ":" not in pg_dsn.split("@")[0].split("//")[1]
    assert os.environ["PGPASSFILE"] == str(postgres.pgpass)
    assert postgres.pgpass.stat().st_mode & 0o777 == 0o600
    with psycopg.connect(pg_dsn) as conn:
        user, owner = conn.execute(
            "SELECT current_user, pg_get_userbyid(datdba) FROM pg_database"
            " WHERE datname = current_database()"
        ).fetchone() or ("", "")
        assert (user, owner) == ("hpcfed", "hpcfed")
        tables = conn.execute(
            "SELECT count(*) FROM information_schema.tables"
            " WHERE table_schema NOT IN ('pg_catalog', 'information_schema')"
        ).fetchone()
        assert tables == (0,)
        conn.execute("CREATE TABLE probe (id int PRIMARY KEY, note text)")
        conn.execute("INSERT INTO probe VALUES (1, 'written')")
        conn.commit()
    with psycopg.connect(pg_dsn) as conn:
        assert conn.execute("SELECT note FROM probe").fetchall() == [("written",)]
        assert conn.execute("SHOW fsync").fetchone() == ("on",)
        assert conn.execute("SHOW listen_addresses").fetchone() == ("127.0.0.1",)


def test_postgres_refuses_a_wrong_password(pg_dsn: str) -> None:
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(pg_dsn, password="not-the-password").close()


def test_up_twice_keeps_postgres_running(testbed: Testbed, postgres: pg.Server) -> None:
    before = postgres.pid()
    assert before is not None and testbed.services() == {"postgres": True}
    testbed.up()
    testbed.up()
    assert postgres.pid() == before
    assert postgres.serving()
    with psycopg.connect(postgres.dsn()) as conn:
        assert conn.execute("SELECT current_database()").fetchone() == ("hpcfed",)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def own_postgres(testbed: Testbed) -> Iterator[pg.Server]:
    """A PostgreSQL of its own (own base dir and port), so stopping it disturbs nobody."""
    base = Path(tempfile.mkdtemp(prefix="hpcfed-pgcheck-", dir="/tmp"))
    base.chmod(0o755)  # the postgres user must reach its dir below
    server = pg.Server(base)
    try:
        pg.ensure_running(base, _free_port())
        yield server
    finally:
        server.stop()
        shutil.rmtree(base)


def test_postgres_stop_leaves_no_process_and_start_serves_again(own_postgres: pg.Server) -> None:
    server = own_postgres
    postmaster = server.pid()
    assert postmaster is not None and server.serving()
    children = descendants(postmaster)
    assert children, "a serving postmaster has its background processes"
    env = dict(os.environ, PGPASSFILE=str(server.pgpass))
    dsn = server.create_database("outage_probe")

    server.stop()

    assert not server.running() and not server.serving()
    assert all(not cmdline(p) for p in [postmaster, *children])
    refused = subprocess.run(
        [str(pg.bin_dir() / "psql"), dsn, "-Atc", "SELECT 1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert refused.returncode != 0 and "Connection refused" in refused.stderr

    server.start()

    assert server.pid() not in (None, postmaster)
    served = subprocess.run(
        [str(pg.bin_dir() / "psql"), dsn, "-Atc", "SELECT current_user"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert served.stdout.strip() == "hpcfed"
    server.drop_database("outage_probe")


# ---------------------------------------------------------------- HAProxy

#: A tiny real HTTP server standing in for a gateway replica: /readyz answers 200 until
#: /unready is called, then 503; /whoami names the server and the X-Forwarded-For it got.
BACKEND_SCRIPT = r"""
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

name, ready = sys.argv[1], [True]

class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/unready":
            ready[0] = False
        if self.path == "/readyz":
            status, body = (200, "ready") if ready[0] else (503, "not ready")
        else:
            status, body = 200, f"{name} {self.headers.get('X-Forwarded-For', '-')}"
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass

server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print(server.server_address[1], flush=True)
server.serve_forever()
"""


class Backend:
    def __init__(self, name: str) -> None:
        self.name = name
        self.proc = subprocess.Popen(
            [sys.executable, "-c", BACKEND_SCRIPT, name], stdout=subprocess.PIPE, text=True
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()  # EOF (and a failure) if the server died
        assert line.strip().isdigit(), f"backend {name} did not start: {line!r}"
        self.port = int(line)
        self.url = f"http://127.0.0.1:{self.port}"

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)


@pytest.fixture
def backends() -> Iterator[dict[str, Backend]]:
    started = {name: Backend(name) for name in ("gw1", "gw2")}
    yield started
    for backend in started.values():
        backend.kill()


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def served_by(proxy: HAProxy, requests: int) -> set[str]:
    answers = [get(proxy.url + "/whoami") for _ in range(requests)]
    assert all(status == 200 for status, _ in answers), answers
    return {body.split()[0] for _, body in answers}


#: What the tests rely on from the example config, kept as it is there.
KEPT_DIRECTIVES = ("option", "timeout", "http-check", "default-server", "balance", "retries")


def test_haproxy_config_is_the_documented_example(tmp_path: Path) -> None:
    proxy = HAProxy(tmp_path, "cfg", 18080, {"a": 18081, "b": 18082})
    rendered = proxy.render()
    example = EXAMPLE_CONFIG.read_text()
    kept = [line for line in example.splitlines() if line.strip().startswith(KEPT_DIRECTIVES)]
    assert kept and all(line in rendered.splitlines() for line in kept)
    assert "    bind 127.0.0.1:18080" in rendered.splitlines()
    servers = [line.split() for line in rendered.splitlines() if line.strip().startswith("server")]
    assert servers == [
        ["server", "a", "127.0.0.1:18081", "check"],
        ["server", "b", "127.0.0.1:18082", "check"],
    ]
    assert f"stats socket {proxy.stats_socket} mode 600 level admin" in rendered
    checked = subprocess.run(
        ["/usr/sbin/haproxy", "-c", "-f", str(EXAMPLE_CONFIG)], capture_output=True, check=False
    )
    assert checked.returncode == 0, checked.stderr


def test_haproxy_sends_requests_only_to_ready_servers(
    tmp_path: Path, backends: dict[str, Backend]
) -> None:
    ports = {name: backend.port for name, backend in backends.items()}
    proxy = HAProxy(tmp_path, "lb", _free_port(), ports)
    proxy.start()
    pid = proxy.pid
    try:
        for name in ports:
            proxy.wait_state(name, "UP")
        assert served_by(proxy, 4) == {"gw1", "gw2"}  # round robin reaches both
        assert get(proxy.url + "/whoami")[1].split()[1] == "127.0.0.1"  # option forwardfor

        assert get(backends["gw2"].url + "/unready") == (200, "gw2 -")
        proxy.wait_state("gw2", "DOWN")

        assert proxy.server_states() == {"gw1": "UP", "gw2": "DOWN"}
        assert served_by(proxy, 6) == {"gw1"}
    finally:
        proxy.stop()
    assert pid is not None and not cmdline(pid)
    assert not [p for p in all_pids() if str(proxy.config_file) in cmdline(p)]


def test_haproxy_redispatches_from_a_dead_server_before_it_is_marked_down(
    tmp_path: Path, backends: dict[str, Backend]
) -> None:
    ports = {name: backend.port for name, backend in backends.items()}
    with HAProxy(tmp_path, "lb", _free_port(), ports) as proxy:
        for name in ports:
            proxy.wait_state(name, "UP")
        backends["gw1"].kill()
        # Still UP for HAProxy until two checks fail: the requests round robin sends to
        # gw1 are refused there, retried, and redispatched to gw2.
        assert served_by(proxy, 6) == {"gw2"}
        proxy.wait_state("gw1", "DOWN")
        assert served_by(proxy, 2) == {"gw2"}
