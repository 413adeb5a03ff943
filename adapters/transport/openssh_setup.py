"""How the gateway runs OpenSSH's own `ssh` client (`adapters.transport.openssh`): nothing
of the user's configuration is read (`-F /dev/null`); the host key must be one pinned
in the center config (a known_hosts file written here, `StrictHostKeyChecking yes`);
the login's private key is handed to a private `ssh-agent` on stdin and never written
to disk, and is dropped from it after `KEY_LIFETIME` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import tempfile
import time
from pathlib import Path

from adapters.errors import AuthenticationFailed
from adapters.transport.connect import SSHTarget
from adapters.transport.hostkeys import host_key_algorithms, parse_pinned_key
from adapters.transport.keys import parse_private_key

KEY_LIFETIME = 600  # seconds a key stays in the agent


class OpenSSHSetup:
    """One private ssh-agent and the files `ssh` needs, for every center and login, and
    the command line that runs a remote command with them (`argv`)."""

    def __init__(self, run_dir: Path | None = None) -> None:
        self._parent = run_dir
        self._dir: Path | None = None
        self._agent: asyncio.subprocess.Process | None = None
        self._agent_lock = asyncio.Lock()
        self._added: dict[str, float] = {}  # public key file -> when its key was added

    async def close(self) -> None:
        agent, self._agent = self._agent, None
        if agent is not None and agent.returncode is None:
            agent.terminate()
            with contextlib.suppress(ProcessLookupError):
                await agent.wait()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None
        self._added.clear()

    # ------------------------------------------------------------ set-up

    def _workdir(self) -> Path:
        if self._dir is None:
            if self._parent is not None:
                self._parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            self._dir = Path(tempfile.mkdtemp(prefix="ssh-", dir=self._parent))
            self._dir.chmod(0o700)
        return self._dir

    async def _agent_socket(self) -> str:
        sock = self._workdir() / "agent.sock"
        if self._agent is not None and self._agent.returncode is None:
            return str(sock)
        async with self._agent_lock:
            if self._agent is None or self._agent.returncode is not None:
                sock.unlink(missing_ok=True)
                self._added.clear()
                self._agent = await asyncio.create_subprocess_exec(
                    "ssh-agent",
                    "-D",
                    "-a",
                    str(sock),
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.DEVNULL,
                )
                assert self._agent.stdout is not None
                # With -D the agent prints its environment lines once it listens.
                await asyncio.wait_for(self._agent.stdout.readline(), 10)
        return str(sock)

    async def _identity(self, target: SSHTarget) -> tuple[str, str]:
        """(agent socket, public key file) with the login's key loaded in the agent."""
        sock = await self._agent_socket()
        name = f"{target.center_id}-{target.login}"
        pub = self._workdir() / f"{name}.pub"
        added = self._added.get(str(pub))
        if added is not None and time.monotonic() - added < KEY_LIFETIME - 60:
            return sock, str(pub)
        data = await asyncio.to_thread(target.credential.material, target.center_id)
        try:
            key = parse_private_key(data)
        except Exception as exc:
            raise AuthenticationFailed(
                f"center {target.center_id}: {target.credential.label} is not a usable key "
                f"({type(exc).__name__})",
                center=target.center_id,
            ) from None
        pub.write_text(f"{key.get_name()} {key.get_base64()}\n", encoding="ascii")
        proc = await asyncio.create_subprocess_exec(
            "ssh-add",
            "-q",
            "-t",
            str(KEY_LIFETIME),
            "-",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            env={**base_env(), "SSH_AUTH_SOCK": sock},
        )
        _, err = await proc.communicate(data)
        del data
        if proc.returncode != 0:
            raise AuthenticationFailed(
                f"center {target.center_id}: the SSH agent refused {target.credential.label}: "
                f"{err.decode(errors='replace').strip()[:200]}",
                center=target.center_id,
            )
        self._added[str(pub)] = time.monotonic()
        return sock, str(pub)

    def _known_hosts(self, target: SSHTarget) -> tuple[str, str]:
        """(known_hosts file, host key algorithms) for the target's pinned keys."""
        path = self._workdir() / f"known_hosts-{target.center_id}"
        types = [parse_pinned_key(line)[0] for line in target.host_keys]
        lines = [
            f"{target.center_id} {key_type} {line.split()[1]}"
            for key_type, line in zip(types, target.host_keys, strict=True)
        ]
        algorithms = host_key_algorithms(types)
        text = "\n".join(lines) + "\n"
        if not path.exists() or path.read_text(encoding="ascii") != text:
            path.write_text(text, encoding="ascii")
        return str(path), ",".join(algorithms)

    async def argv(self, target: SSHTarget, remote_command: str) -> list[str]:
        sock, pub = await self._identity(target)
        known_hosts, algorithms = self._known_hosts(target)
        options = {
            "BatchMode": "yes",
            "StrictHostKeyChecking": "yes",
            "UserKnownHostsFile": known_hosts,
            "GlobalKnownHostsFile": "/dev/null",
            "HostKeyAlias": target.center_id,
            "HostKeyAlgorithms": algorithms,
            "UpdateHostKeys": "no",
            "IdentityAgent": sock,
            "IdentitiesOnly": "yes",
            "IdentityFile": pub,
            "PasswordAuthentication": "no",
            "KbdInteractiveAuthentication": "no",
            "ConnectTimeout": str(max(1, round(target.connect_timeout))),
            "ServerAliveInterval": str(max(1, round(target.keepalive_interval))),
            "ServerAliveCountMax": "3",
            "ControlMaster": "no",
            "ControlPath": "none",
            "Compression": "no",
            "LogLevel": "ERROR",
        }
        argv = ["ssh", "-F", "/dev/null", "-T", "-x", "-a"]
        for key, value in options.items():
            argv += ["-o", f"{key}={value}"]
        argv += ["-p", str(target.port), "-l", target.login, target.host, "--", remote_command]
        return argv


def base_env() -> dict[str, str]:
    """What `ssh` needs of the gateway's environment; no agent of the user's."""
    return {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "LC_ALL", "USER")}
