"""SSH client credentials: where a login's private key comes from.

A connection asks its credential for the key each time it authenticates and
drops it afterwards, so a private key is in memory only while a transport is
being opened. Error messages name where the key came from, never its content.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import paramiko
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from adapters.errors import AuthenticationFailed


class Credential(Protocol):
    @property
    def label(self) -> str:
        """Where the key comes from, for messages: 'key file /x', 'vault entry ssh/c/l'."""
        ...

    def load(self, center_id: str) -> paramiko.PKey:
        """The private key; raises AuthenticationFailed naming `label` when unusable."""
        ...

    def material(self, center_id: str) -> bytes:
        """The private key file's bytes, for handing to OpenSSH's agent."""
        ...


def parse_private_key(data: bytes) -> paramiko.PKey:
    """An unencrypted OpenSSH or PEM private key (Ed25519, ECDSA or RSA) as a paramiko key.

    Raises paramiko.PasswordRequiredException for an encrypted key and ValueError
    for anything else unusable; neither message holds key material.
    """
    try:
        loaded = serialization.load_ssh_private_key(data, password=None)
    except TypeError:
        raise paramiko.PasswordRequiredException("the key is encrypted") from None
    except ValueError:
        try:
            loaded = serialization.load_pem_private_key(data, password=None)
        except TypeError:
            raise paramiko.PasswordRequiredException("the key is encrypted") from None
        except (ValueError, paramiko.SSHException):
            raise ValueError("not an OpenSSH or PEM private key") from None
    key_class: type[paramiko.PKey]
    if isinstance(loaded, ed25519.Ed25519PrivateKey):
        key_class = paramiko.Ed25519Key
    elif isinstance(loaded, ec.EllipticCurvePrivateKey):
        key_class = paramiko.ECDSAKey
    elif isinstance(loaded, rsa.RSAPrivateKey):
        key_class = paramiko.RSAKey
    else:
        raise ValueError(f"unsupported key type {type(loaded).__name__}")
    try:
        return key_class.from_private_key(io.StringIO(data.decode("ascii")))
    except (paramiko.SSHException, UnicodeDecodeError, ValueError) as exc:
        raise ValueError(f"unreadable {key_class.__name__} ({type(exc).__name__})") from None


class _Parsed:
    """What every credential does with its `material`: parse it, or say why it cannot."""

    label: str

    def material(self, center_id: str) -> bytes:
        raise NotImplementedError

    def load(self, center_id: str) -> paramiko.PKey:
        data = self.material(center_id)
        try:
            return parse_private_key(data)
        except (paramiko.PasswordRequiredException, ValueError) as exc:
            if isinstance(exc, paramiko.PasswordRequiredException):
                why = "is encrypted with a passphrase; store it unencrypted in the vault"
            else:
                why = f"is not a usable private key ({exc})"
            raise AuthenticationFailed(
                f"center {center_id}: {self.label} {why}", center=center_id
            ) from None


@dataclass(frozen=True)
class KeyFile(_Parsed):
    """A private key read from a file at each connect."""

    path: str

    @property
    def label(self) -> str:
        return f"key file {self.path}"

    def material(self, center_id: str) -> bytes:
        try:
            return Path(self.path).expanduser().read_bytes()
        except OSError as exc:
            raise AuthenticationFailed(
                f"center {center_id}: cannot read {self.label}: {exc.strerror}", center=center_id
            ) from None


@dataclass(frozen=True)
class KeyData(_Parsed):
    """A private key fetched on demand (e.g. decrypted from a vault) at each connect.

    `fetch` raises LookupError with a message fit for the user when the key is missing.
    """

    label: str
    fetch: Callable[[], bytes] = field(compare=False, repr=False)

    def material(self, center_id: str) -> bytes:
        try:
            return self.fetch()
        except LookupError as exc:
            raise AuthenticationFailed(
                f"center {center_id}: {exc.args[0] if exc.args else self.label}",
                center=center_id,
            ) from None
