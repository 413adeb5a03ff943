"""The host-key policy: a center's host keys are pinned in its config, and a server
presenting any other key is refused (never AutoAddPolicy), naming its fingerprint.
The paramiko connection (`adapters.transport.connect`) and the OpenSSH bulk path
(`adapters.transport.openssh`) both apply it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import struct
from collections.abc import Iterable, Sequence

import paramiko

from adapters.errors import HostKeyRejected

#: A pinned key's type -> the host key algorithms that can prove it. paramiko no
#: longer accepts SHA-1 "ssh-rsa" signatures, so RSA keys negotiate rsa-sha2-*.
HOST_KEY_ALGORITHMS = {
    "ssh-ed25519": ("ssh-ed25519",),
    "ecdsa-sha2-nistp256": ("ecdsa-sha2-nistp256",),
    "ecdsa-sha2-nistp384": ("ecdsa-sha2-nistp384",),
    "ecdsa-sha2-nistp521": ("ecdsa-sha2-nistp521",),
    "ssh-rsa": ("rsa-sha2-512", "rsa-sha2-256"),
}

#: A pinned host key: (type, public key blob).
PinnedKey = tuple[str, bytes]


def fingerprint(key_blob: bytes) -> str:
    """OpenSSH's SHA256 fingerprint of a public key blob."""
    digest = base64.b64encode(hashlib.sha256(key_blob).digest()).decode()
    return "SHA256:" + digest.rstrip("=")


def parse_pinned_key(line: str) -> PinnedKey:
    """'ssh-ed25519 AAAA... comment' -> (type, blob), checking the blob names the same type."""
    parts = line.split()
    if len(parts) < 2:
        raise ValueError(f"pinned host key must be 'type base64', got {line[:40]!r}")
    key_type = parts[0]
    if key_type not in HOST_KEY_ALGORITHMS:
        raise ValueError(f"pinned host key type {key_type} is not supported")
    try:
        blob = base64.b64decode(parts[1], validate=True)
        (name_len,) = struct.unpack(">I", blob[:4])
        blob_type = blob[4 : 4 + name_len].decode("ascii")
    except (binascii.Error, struct.error, UnicodeDecodeError) as exc:
        raise ValueError(f"pinned {key_type} host key is not valid base64 key data") from exc
    if blob_type != key_type:
        raise ValueError(f"pinned host key says {key_type} but its data is a {blob_type} key")
    return key_type, blob


def host_key_algorithms(key_types: Iterable[str]) -> list[str]:
    """The algorithms to offer for pinned keys of these types, in order, each once: the
    server may prove only a key we pinned."""
    algorithms: list[str] = []
    for key_type in key_types:
        algorithms += [a for a in HOST_KEY_ALGORITHMS[key_type] if a not in algorithms]
    return algorithms


def no_pinned_type(center_id: str, pinned: Sequence[PinnedKey]) -> HostKeyRejected:
    """The server offered no host key of any pinned type."""
    types = ", ".join(sorted({k for k, _ in pinned}))
    return HostKeyRejected(
        f"center {center_id}: the server offers no host key of the pinned type ({types}); "
        "refusing to connect",
        center=center_id,
    )


def check_server_key(
    center_id: str, server_key: paramiko.PKey, pinned: Sequence[PinnedKey]
) -> None:
    """Refuse (HostKeyRejected) a server key that is not one of the pinned ones."""
    blob = server_key.asbytes()
    if not any(blob == key for _, key in pinned):
        seen = fingerprint(blob)
        raise HostKeyRejected(
            f"center {center_id}: host key {seen} ({server_key.get_name()}) is not "
            "pinned in the center config; refusing to connect",
            center=center_id,
            fingerprint=seen,
        )
