"""The SSH side of a center: job users and their keys, host keys, one sshd per center."""

from __future__ import annotations

import os
import pwd
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path

from tests.testbed import loginenv
from tests.testbed.centers import CenterInfo
from tests.testbed.procs import (
    TestbedError,
    cmdline,
    find_daemon,
    log_tail,
    read_pidfile,
    run,
    spawn,
    ssh_banner,
    wait_until,
    which,
)

LOOPBACK = "127.0.0.1"
PRIVSEP_DIR = Path("/run/sshd")

# ---------------------------------------------------------------- users and keys


def ensure_user(name: str) -> pwd.struct_passwd:
    """An ordinary login user with a home directory and a usable (not locked) account,
    and the login shell and startup files of its login environment (`loginenv`)."""
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        run([which("useradd"), "-m", "-s", "/bin/bash", name])
        entry = pwd.getpwnam(name)
    # A fresh account is locked ('!' in /etc/shadow) and sshd refuses locked accounts even
    # for key logins; '*' means "no password" without the lock.
    if _shadow_password(name).startswith("!"):
        run([which("usermod"), "-p", "*", name])
    home = Path(entry.pw_dir)
    if not home.is_dir():
        home.mkdir(mode=0o755, parents=True)
        os.chown(home, entry.pw_uid, entry.pw_gid)
    return loginenv.apply(entry)


def _shadow_password(name: str) -> str:
    try:
        lines = Path("/etc/shadow").read_text().splitlines()
    except OSError:
        return ""
    for line in lines:
        fields = line.split(":")
        if fields[0] == name and len(fields) > 1:
            return fields[1]
    return ""


def ensure_keypair(path: Path, comment: str) -> str:
    """An ed25519 key without passphrase, created once; returns 'ssh-ed25519 AAAA...'."""
    pub = path.with_name(path.name + ".pub")
    if not path.exists():
        pub.unlink(missing_ok=True)
        run([which("ssh-keygen"), "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)])
    elif not pub.exists():
        derived = run([which("ssh-keygen"), "-y", "-f", str(path)]).stdout
        pub.write_text(derived)
    path.chmod(0o600)
    return public_key(pub)


def public_key(pub: Path) -> str:
    """'type base64' from a .pub file, without the comment."""
    fields = pub.read_text().split()
    if len(fields) < 2:
        raise TestbedError(f"{pub} is not an OpenSSH public key")
    return f"{fields[0]} {fields[1]}"


def authorize(user: pwd.struct_passwd, key: str) -> None:
    """Add `key` to the user's authorized_keys unless present; other entries are kept."""
    ssh_dir = Path(user.pw_dir) / ".ssh"
    ssh_dir.mkdir(mode=0o700, exist_ok=True)
    auth = ssh_dir / "authorized_keys"
    lines = auth.read_text().splitlines() if auth.exists() else []
    if not any(key in line for line in lines):
        lines.append(f"{key} hpcfed-testbed")
        auth.write_text("\n".join(lines) + "\n")
    for path, mode in ((ssh_dir, 0o700), (auth, 0o600)):
        os.chown(path, user.pw_uid, user.pw_gid)
        path.chmod(mode)


# ---------------------------------------------------------------- sshd


#: PATH of a session at a center, after the center's own `bin` (OpenSSH's default).
SESSION_PATH = "/usr/local/bin:/usr/bin:/bin:/usr/games"


def render_sshd_config(center: CenterInfo, users: Sequence[str]) -> str:
    return "\n".join(
        [
            f"# sshd of the hpcfed testbed center {center.id}. Generated: edits are lost.",
            f"Port {center.ssh_port}",
            f"ListenAddress {LOOPBACK}",
            "AddressFamily inet",
            f"HostKey {center.host_key_file}",
            f"PidFile {center.pidfile('sshd')}",
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "PermitRootLogin no",
            f"AllowUsers {' '.join(users)}",
            "UsePAM no",
            "StrictModes no",
            "UseDNS no",
            "PrintMotd no",
            "X11Forwarding no",
            # Benchmarks open many connections at once; the default 10:30:100 would drop some.
            "MaxStartups 100:30:200",
            # Every command run through this sshd talks to this center's cluster, and finds
            # the status wrappers of `tests.testbed.status_filter` first (sshd takes only
            # the first SetEnv line: both on one).
            f"SetEnv SLURM_CONF={center.slurm_conf} PATH={center.dir / 'bin'}:{SESSION_PATH}",
            # An external sftp-server is started through the login shell, as at many
            # real centers: what a startup file prints lands in the SFTP stream.
            "Subsystem sftp "
            + (
                loginenv.SFTP_SERVER
                if center.id in loginenv.EXTERNAL_SFTP_CENTERS
                else "internal-sftp"
            ),
            "LogLevel INFO",
            "",
        ]
    )


def _matcher(center: CenterInfo) -> Callable[[str], bool]:
    config = str(center.sshd_config)

    def matches(cmd: str) -> bool:
        # The listener rewrites its title to "sshd: /usr/sbin/sshd -f <config> ... [listener]";
        # per-connection children ("sshd: alice [priv]") do not carry the config path.
        words = cmd.split(" ")
        return "sshd" in words[0] and config in words

    return matches


def sshd_pid(center: CenterInfo) -> int | None:
    return find_daemon(center.pidfile("sshd"), _matcher(center))


def launch_sshd(center: CenterInfo) -> None:
    PRIVSEP_DIR.mkdir(mode=0o755, exist_ok=True)
    pidfile = center.pidfile("sshd")
    if pidfile.exists() and not _matcher(center)(cmdline(read_pidfile(pidfile) or 0)):
        pidfile.unlink()
    # sshd re-executes itself for every connection and insists on an absolute path.
    argv = [which("sshd"), "-f", str(center.sshd_config), "-E", str(center.logfile("sshd"))]
    rc = spawn(argv, os.environ, center.launch_log("sshd"))
    if rc != 0:
        raise TestbedError(f"sshd of {center.id} exited {rc} at start{diagnose_sshd(center)}")


def diagnose_sshd(center: CenterInfo) -> str:
    return f"{log_tail(center.launch_log('sshd'), 5)}{log_tail(center.logfile('sshd'))}"


def wait_sshd(center: CenterInfo, timeout: float) -> None:
    def serving() -> bool:
        if sshd_pid(center) is None:
            raise TestbedError(f"sshd of {center.id} exited at start{diagnose_sshd(center)}")
        return ssh_banner(center.ssh_port)

    wait_until(
        serving,
        timeout,
        f"sshd of {center.id} to answer on {LOOPBACK}:{center.ssh_port}",
        lambda: diagnose_sshd(center),
    )


def known_hosts_line(center: CenterInfo) -> str:
    key = public_key(center.host_key_file.with_name(center.host_key_file.name + ".pub"))
    return f"[{LOOPBACK}]:{center.ssh_port} {key}"


def ssh_argv(
    center: CenterInfo, key: Path, known_hosts: Path, user: str, remote: Sequence[str]
) -> list[str]:
    """An OpenSSH client command that trusts only the pinned host key."""
    return [
        which("ssh"),
        "-F",
        "/dev/null",
        "-o",
        "BatchMode=yes",
        "-o",
        f"UserKnownHostsFile={known_hosts}",
        "-o",
        "GlobalKnownHostsFile=/dev/null",
        "-o",
        "StrictHostKeyChecking=yes",
        "-o",
        "IdentitiesOnly=yes",
        "-o",
        "ConnectTimeout=5",
        "-o",
        "LogLevel=ERROR",
        "-p",
        str(center.ssh_port),
        "-i",
        str(key),
        f"{user}@{LOOPBACK}",
        *remote,
    ]


def check_logins(logins: Sequence[tuple[CenterInfo, list[str]]], timeout: float) -> None:
    """Run every login command in parallel until each has succeeded once."""
    pending = list(logins)
    errors: dict[str, tuple[CenterInfo, str]] = {}

    def all_done() -> bool:
        started = [
            (
                center,
                argv,
                subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    text=True,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                ),
            )
            for center, argv in pending
        ]
        for center, argv, proc in started:
            try:
                out, err = proc.communicate(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                out, err = proc.communicate()
            what = f"{center.id}: ssh " + " ".join(argv[argv.index("-i") + 2 :])
            if proc.returncode == 0:
                pending.remove((center, argv))
                errors.pop(what, None)
            else:
                errors[what] = (center, f"{what}: exit {proc.returncode}: {(err or out).strip()}")
        return not pending

    def diagnose() -> str:
        return "".join(
            f"\n{message}{log_tail(center.logfile('sshd'), 8)}"
            for center, message in errors.values()
        )

    wait_until(all_done, timeout, "SSH logins as the job users", diagnose)
