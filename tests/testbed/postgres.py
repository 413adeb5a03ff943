"""The testbed's PostgreSQL: one server from Debian's package, for the gateway's shared state.

Facts this rests on (PostgreSQL 15, Debian package `postgresql`):
- The server refuses to run as root: `initdb` and the server run as the `postgres` user,
  on a data directory it owns (mode 0700) under `<base>/postgres`. Debian's own cluster
  (port 5432, /etc/postgresql) is neither used nor touched.
- The binaries live in /usr/lib/postgresql/<version>/bin, not on PATH; the newest
  installed version is used.
- `pg_ctl start` forks the server and returns; `pg_ctl stop -m fast` disconnects the
  clients, checkpoints and waits until the server and all its children have exited.
- The role `hpcfed` logs in over TCP on 127.0.0.1 with SCRAM-SHA-256 only; its password is
  in `<base>/postgres/pgpass` (libpq's pgpass format, mode 0600), nowhere else. The server
  is sent a SCRAM verifier computed here, never the password itself. Admin work goes through
  the unix socket (a directory only `postgres` and root can enter) as the superuser
  `postgres`, which is the only login `local ... trust` lets in.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import pwd
import re
import secrets
from dataclasses import dataclass
from pathlib import Path

from tests.testbed.procs import (
    TestbedError,
    TestbedUnavailable,
    cmdline,
    descendants,
    find_daemon,
    is_gone,
    log_tail,
    port_is_free,
    run,
    spawn,
    terminate,
    wait_until,
    write_if_changed,
)

PORT = 25432
ROLE = "hpcfed"
DATABASE = "hpcfed"
START_TIMEOUT = 30.0
STOP_TIMEOUT = 30.0
#: What the gateway replicas and the tests may open at once (each replica has a pool).
MAX_CONNECTIONS = 200
_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_SCRAM_ITERATIONS = 4096  # PostgreSQL's default scram_iterations


# ---------------------------------------------------------------- paths


def home(base: Path) -> Path:
    return Path(base) / "postgres"


def data_dir(base: Path) -> Path:
    return home(base) / "data"


def socket_dir(base: Path) -> Path:
    return home(base) / "run"


def log_file(base: Path) -> Path:
    return home(base) / "postgres.log"


def pgpass_file(base: Path) -> Path:
    """libpq's password file for the role `hpcfed` (point PGPASSFILE at it)."""
    return home(base) / "pgpass"


def _port_file(base: Path) -> Path:
    return home(base) / "port"


def port(base: Path) -> int:
    """The server's TCP port: PORT unless `ensure_running` was given another one."""
    try:
        return int(_port_file(base).read_text().strip())
    except (OSError, ValueError):
        return PORT


def dsn(base: Path, dbname: str = DATABASE) -> str:
    """A libpq URI for the role `hpcfed` over TCP; the password comes from the pgpass file."""
    return f"postgresql://{ROLE}@127.0.0.1:{port(base)}/{_checked(dbname)}"


# ---------------------------------------------------------------- binaries and user


def bin_dir() -> Path:
    """The newest /usr/lib/postgresql/<version>/bin holding a server."""
    found = sorted(
        (p for p in Path("/usr/lib/postgresql").glob("*/bin") if (p / "postgres").exists()),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else -1,
    )
    if not found:
        raise TestbedUnavailable(
            "no PostgreSQL server in /usr/lib/postgresql/*/bin: install the Debian package "
            "postgresql"
        )
    return found[-1]


def _tool(name: str) -> str:
    return str(bin_dir() / name)


def _postgres_ids() -> tuple[int, int]:
    try:
        entry = pwd.getpwnam("postgres")
    except KeyError:
        raise TestbedUnavailable(
            "user 'postgres' is missing: install the Debian package postgresql"
        ) from None
    return entry.pw_uid, entry.pw_gid


def _env() -> dict[str, str]:
    # Not os.environ: the server has no use for the caller's PG* variables or HOME.
    return {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"}


# ---------------------------------------------------------------- config files


def render_settings(base: Path, tcp_port: int) -> str:
    return "\n".join(
        [
            "# PostgreSQL of the hpcfed testbed. Generated: edits are lost.",
            "listen_addresses = '127.0.0.1'",
            f"port = {tcp_port}",
            f"unix_socket_directories = '{socket_dir(base)}'",
            "unix_socket_permissions = 0700",
            "password_encryption = 'scram-sha-256'",
            f"max_connections = {MAX_CONNECTIONS}",
            # Durable as in production: the store's tests measure real commits.
            "fsync = on",
            "synchronous_commit = on",
            "full_page_writes = on",
            "log_line_prefix = '%m [%p] %q%u@%d '",
            "log_connections = off",
            "",
        ]
    )


def render_hba() -> str:
    return "\n".join(
        [
            "# hpcfed testbed. Generated: edits are lost.",
            "# TYPE  DATABASE  USER      ADDRESS        METHOD",
            "local   all       postgres                 trust",
            "host    all       all       127.0.0.1/32   scram-sha-256",
            "",
        ]
    )


def _write_as_postgres(path: Path, text: str, mode: int) -> bool:
    changed = write_if_changed(path, text, mode)
    uid, gid = _postgres_ids()
    os.chown(path, uid, gid)
    return changed


def prepare(base: Path, tcp_port: int = PORT) -> bool:
    """Dirs, data directory (initdb once), config files, pgpass; True if a config changed."""
    uid, gid = _postgres_ids()
    top = home(base)
    top.mkdir(mode=0o755, parents=True, exist_ok=True)
    os.chown(top, uid, gid)
    top.chmod(0o755)
    for path in (data_dir(base), socket_dir(base)):
        path.mkdir(mode=0o700, exist_ok=True)
        os.chown(path, uid, gid)
        path.chmod(0o700)
    changed = write_if_changed(_port_file(base), f"{tcp_port}\n", 0o644)
    if not (data_dir(base) / "PG_VERSION").exists():
        _initdb(base)
        changed = True
    conf = data_dir(base) / "postgresql.conf"
    include = "include = 'hpcfed-testbed.conf'"
    if include not in conf.read_text().splitlines():
        with conf.open("a") as handle:
            handle.write(f"\n# Last, so that it wins.\n{include}\n")
        changed = True
    settings = render_settings(base, tcp_port)
    changed |= _write_as_postgres(data_dir(base) / "hpcfed-testbed.conf", settings, 0o600)
    changed |= _write_as_postgres(data_dir(base) / "pg_hba.conf", render_hba(), 0o600)
    _ensure_pgpass(base, tcp_port)
    return changed


def _initdb(base: Path) -> None:
    argv = [
        _tool("initdb"),
        "-D",
        str(data_dir(base)),
        "-U",
        "postgres",
        "--auth-local=trust",
        "--auth-host=scram-sha-256",
        "--encoding=UTF8",
        "--locale=C.UTF-8",
    ]
    output = home(base) / "initdb.out"
    rc = spawn(argv, _env(), output, as_ids=_postgres_ids(), cwd=home(base))
    if rc != 0:
        raise TestbedError(f"initdb exited {rc}{log_tail(output)}")


def _ensure_pgpass(base: Path, tcp_port: int) -> None:
    path = pgpass_file(base)
    password = _password(base) if path.exists() else secrets.token_urlsafe(24)
    # libpq ignores a password file that group or others may read.
    write_if_changed(path, f"127.0.0.1:{tcp_port}:*:{ROLE}:{password}\n", 0o600)


def _password(base: Path) -> str:
    line = pgpass_file(base).read_text().strip().splitlines()[0]
    # token_urlsafe has no ':' or '\\', so no pgpass escapes to undo.
    return line.rsplit(":", 1)[1]


def scram_verifier(password: str, salt: bytes, iterations: int = _SCRAM_ITERATIONS) -> str:
    """What PostgreSQL stores for a SCRAM-SHA-256 password (RFC 5802/7677)."""
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", "sha256").digest()

    def b64(raw: bytes) -> str:
        return base64.b64encode(raw).decode()

    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"


def _verifier_matches(stored: str, password: str) -> bool:
    try:
        head, _keys = stored.split("$", 2)[1:]
        iterations, salt = head.split(":")
        return hmac.compare_digest(
            scram_verifier(password, base64.b64decode(salt), int(iterations)), stored
        )
    except ValueError:
        return False


# ---------------------------------------------------------------- the server


def pid(base: Path) -> int | None:
    """The postmaster's pid, or None."""
    marker = f" -D {data_dir(base)} "

    def matches(cmd: str) -> bool:
        return os.path.basename(cmd.split(" ", 1)[0]) == "postgres" and marker in f"{cmd} "

    return find_daemon(data_dir(base) / "postmaster.pid", matches)


def running(base: Path) -> bool:
    """Whether the server process runs (it may still be starting; see `serving`)."""
    return pid(base) is not None


def serving(base: Path) -> bool:
    """Whether the server accepts connections on its TCP port."""
    probe = [_tool("pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(port(base)), "-t", "2"]
    return run(probe, env=_env(), timeout=10, check=False).returncode == 0


def launch(base: Path) -> None:
    """Start the server (without waiting until it serves); it must not be running."""
    tcp_port = port(base)
    if not port_is_free(tcp_port):
        raise TestbedError(
            f"cannot start PostgreSQL: port {tcp_port} is taken by another process (see `ss -ltnp`)"
        )
    argv = [_tool("pg_ctl"), "-D", str(data_dir(base)), "-l", str(log_file(base)), "-W", "start"]
    if not log_file(base).exists():
        _write_as_postgres(log_file(base), "", 0o600)
    output = home(base) / "pg_ctl.out"
    rc = spawn(argv, _env(), output, as_ids=_postgres_ids(), cwd=home(base))
    if rc != 0:
        raise TestbedError(f"pg_ctl start exited {rc}{log_tail(output)}{diagnose(base)}")


def wait_serving(base: Path, timeout: float = START_TIMEOUT) -> None:
    def ready() -> bool:
        # pg_ctl has forked: the server may take a moment to appear, then to listen.
        return serving(base)

    wait_until(
        ready, timeout, f"PostgreSQL to serve on 127.0.0.1:{port(base)}", lambda: diagnose(base)
    )


def diagnose(base: Path) -> str:
    return log_tail(log_file(base))


def _admin_sql(base: Path, sql: str, tuples: bool = False) -> str:
    """SQL as the superuser over the unix socket; statements on stdin, never in argv."""
    argv = [_tool("psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", str(socket_dir(base))]
    argv += ["-p", str(port(base)), "-U", "postgres", "-d", "postgres"]
    if tuples:
        argv += ["-A", "-t", "-F", "|"]
    proc = run([*argv, "-f", "-"], env=_env(), timeout=60, check=False, input_data=sql)
    if proc.returncode != 0:
        # The statements are not repeated: one of them may hold a verifier.
        raise TestbedError(f"psql as postgres exited {proc.returncode}: {proc.stderr.strip()}")
    return proc.stdout


def ensure_role_and_database(base: Path) -> None:
    """The login role `hpcfed` with the pgpass password, and its database; idempotent."""
    password = _password(base)
    state = _admin_sql(
        base,
        f"SELECT 'role', coalesce(rolpassword, '') FROM pg_authid WHERE rolname = '{ROLE}';\n"
        f"SELECT 'db', pg_get_userbyid(datdba) FROM pg_database WHERE datname = '{DATABASE}';\n",
        tuples=True,
    )
    rows = dict(line.split("|", 1) for line in state.splitlines() if "|" in line)
    statements = []
    if "role" not in rows:
        statements.append(f"CREATE ROLE {ROLE} LOGIN;")
    if not _verifier_matches(rows.get("role", ""), password):
        verifier = scram_verifier(password, secrets.token_bytes(16))
        statements.append(f"ALTER ROLE {ROLE} LOGIN PASSWORD '{verifier}';")
    if "db" not in rows:
        statements.append(f"CREATE DATABASE {DATABASE} OWNER {ROLE};")
    elif rows["db"] != ROLE:
        statements.append(f"ALTER DATABASE {DATABASE} OWNER TO {ROLE};")
    if statements:
        _admin_sql(base, "\n".join(statements) + "\n")


def ensure_running(base: Path, tcp_port: int = PORT) -> None:
    """Everything `up` does for PostgreSQL, for a base dir of its own: idempotent."""
    changed = prepare(base, tcp_port)
    if changed and running(base):
        stop_server(base)  # running on an outdated config
    if not running(base):
        launch(base)
    wait_serving(base)
    ensure_role_and_database(base)


def stop_server(base: Path) -> None:
    """Stop the server (fast: clients are disconnected) and wait until no process of it is
    left; nothing happens if it does not run."""
    postmaster = pid(base)
    if postmaster is None:
        return
    victims = [postmaster, *descendants(postmaster)]
    argv = [_tool("pg_ctl"), "-D", str(data_dir(base)), "-m", "fast", "-w"]
    argv += ["-t", str(int(STOP_TIMEOUT)), "stop"]
    output = home(base) / "pg_ctl.out"
    rc = spawn(argv, _env(), output, as_ids=_postgres_ids(), cwd=home(base))
    if rc != 0 and not is_gone(victims):
        terminate(victims, timeout=10)
    wait_until(
        lambda: is_gone(victims),
        STOP_TIMEOUT,
        "PostgreSQL's processes to exit",
        lambda: "".join(f"\n  {p}: {cmdline(p)}" for p in victims if cmdline(p)),
    )


def start_server(base: Path, timeout: float = START_TIMEOUT) -> None:
    """Start the server on its existing data and wait until it serves (e.g. after an
    outage made with `stop_server`)."""
    if not running(base):
        launch(base)
    wait_serving(base, timeout)


# ---------------------------------------------------------------- databases for tests


def _checked(name: str) -> str:
    if not _NAME.match(name):
        raise ValueError(f"database name {name!r}: lower-case letters, digits and _ only")
    return name


def create_database(base: Path, name: str) -> str:
    """A new empty database owned by `hpcfed`; returns its DSN."""
    _admin_sql(base, f"CREATE DATABASE {_checked(name)} OWNER {ROLE};\n")
    return dsn(base, name)


def drop_database(base: Path, name: str) -> None:
    """Drop a database, disconnecting whoever is still connected; no error if it is gone."""
    _admin_sql(base, f"DROP DATABASE IF EXISTS {_checked(name)} WITH (FORCE);\n")


@dataclass(frozen=True)
class Server:
    """The functions above, bound to one base dir (what the `postgres` fixture gives)."""

    base: Path

    @property
    def pgpass(self) -> Path:
        return pgpass_file(self.base)

    @property
    def port(self) -> int:
        return port(self.base)

    def dsn(self, dbname: str = DATABASE) -> str:
        return dsn(self.base, dbname)

    def create_database(self, name: str) -> str:
        return create_database(self.base, name)

    def drop_database(self, name: str) -> None:
        drop_database(self.base, name)

    def stop(self) -> None:
        stop_server(self.base)

    def start(self, timeout: float = START_TIMEOUT) -> None:
        start_server(self.base, timeout)

    def running(self) -> bool:
        return running(self.base)

    def serving(self) -> bool:
        return serving(self.base)

    def pid(self) -> int | None:
        return pid(self.base)
