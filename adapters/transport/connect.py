"""Opening one SSH transport to a center (blocking, in a worker thread): TCP, the
handshake under the host-key policy (`adapters.transport.hostkeys`), and public-key
authentication with the login's key, loaded for that handshake only.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Sequence
from dataclasses import dataclass

import paramiko

from adapters.errors import AuthenticationFailed, CenterUnavailable
from adapters.transport.hostkeys import (
    PinnedKey,
    check_server_key,
    host_key_algorithms,
    no_pinned_type,
)
from adapters.transport.keys import Credential

#: What a connection does is logged under one name (docs/metrics.md).
log = logging.getLogger("adapters.transport.ssh")


@dataclass(frozen=True)
class SSHTarget:
    """One login at one center, and how to reach it."""

    center_id: str
    host: str
    port: int
    login: str
    credential: Credential  # where the login's private key comes from
    host_keys: tuple[str, ...]  # pinned, "ssh-ed25519 AAAA..." (type + base64, comment allowed)
    connect_timeout: float = 10.0
    command_timeout: float = 60.0
    keepalive_interval: float = 15.0
    max_sessions: int = 8

    @property
    def pool_key(self) -> tuple[str, str, int, str]:
        return (self.center_id, self.host, self.port, self.login)


def unavailable(t: SSHTarget, what: str) -> CenterUnavailable:
    """The center could not be reached, or its outcome is unknown: `what` happened."""
    return CenterUnavailable(
        f"center {t.center_id}: {t.login}@{t.host}:{t.port}: {what}", center=t.center_id
    )


def open_transport(t: SSHTarget, pinned: Sequence[PinnedKey]) -> paramiko.Transport:
    """A transport to the target, its host key checked against `pinned` and the login
    authenticated; raises CenterUnavailable, HostKeyRejected or AuthenticationFailed.
    Blocking: runs in a worker thread."""
    try:
        sock = socket.create_connection((t.host, t.port), timeout=t.connect_timeout)
    except OSError as exc:
        raise unavailable(t, f"cannot connect: {exc.strerror or exc}") from None
    # Nagle plus delayed ACKs costs ~40 ms per request/response round trip.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    transport = paramiko.Transport(sock)
    try:
        transport.banner_timeout = t.connect_timeout
        transport.handshake_timeout = t.connect_timeout
        transport.auth_timeout = t.connect_timeout
        algorithms = host_key_algorithms(k for k, _ in pinned)
        transport.get_security_options().key_types = tuple(algorithms)
        _handshake(t, transport, pinned)
        _authenticate(t, transport)
        transport.set_keepalive(max(1, round(t.keepalive_interval)))
    except BaseException:
        transport.close()
        raise
    log.info("center %s: connected to %s:%s as %s", t.center_id, t.host, t.port, t.login)
    return transport


def _handshake(t: SSHTarget, transport: paramiko.Transport, pinned: Sequence[PinnedKey]) -> None:
    try:
        transport.start_client(timeout=t.connect_timeout)
    except paramiko.ssh_exception.IncompatiblePeer as exc:
        if "host key" in str(exc):
            raise no_pinned_type(t.center_id, pinned) from None
        raise unavailable(t, f"SSH negotiation failed: {exc}") from None
    except (paramiko.SSHException, EOFError, OSError) as exc:
        raise unavailable(t, f"SSH handshake failed: {exc or type(exc).__name__}") from None
    # start_client returns quietly when its timeout passes mid-negotiation (a server
    # that accepts and never answers): no key was exchanged, the center is not there.
    if not transport.is_active() or not transport.initial_kex_done:
        raise unavailable(t, f"SSH handshake timed out after {t.connect_timeout:g}s")
    check_server_key(t.center_id, transport.get_remote_server_key(), pinned)


def _authenticate(t: SSHTarget, transport: paramiko.Transport) -> None:
    # Loaded for this handshake only: the key is not kept between connects.
    key = t.credential.load(t.center_id)
    try:
        transport.auth_publickey(t.login, key)
    except paramiko.AuthenticationException as exc:
        raise AuthenticationFailed(
            f"center {t.center_id}: {t.login}@{t.host}:{t.port} refused the key from "
            f"{t.credential.label} ({key.get_name()} {key.fingerprint}): {exc}",
            center=t.center_id,
        ) from None
    except (paramiko.SSHException, EOFError, OSError) as exc:
        raise unavailable(t, f"authentication did not complete: {exc}") from None
    finally:
        del key
