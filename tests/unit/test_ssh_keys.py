"""Pinned host keys: parsing, fingerprints as OpenSSH prints them, key-type restriction."""

from __future__ import annotations

import base64

import pytest

from adapters.transport.hostkeys import fingerprint, parse_pinned_key
from adapters.transport.keys import KeyFile
from adapters.transport.ssh import SSHConnection, SSHPool, SSHTarget

# Public keys and the fingerprints `ssh-keygen -lf` printed for them.
ED25519 = (
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDffThQ+gChGQbta6NtHXuCg6vpoLGzs7uMcnTm20h5j root@vm",
    "SHA256:bzdusvZ1ntK3Naqk0dtqZMWQFNoaqXHS1XQyT6UrAfw",
)
ECDSA = (
    "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBApYkyhM5LX2DLIEHSFy"
    "VKm5FkSX79D/pr8HEzBccpolhrvC6zFaXwA2AN3AjwgOv+KbvpJSBAbB1FFFb2X4ocY=",
    "SHA256:MF/kwZwNH6jXdved/WRDtfCjMTitmTc9TDz1rtXjPbk",
)
RSA = (
    "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQDJo540qrAWzLSmVofNSr9EmrxP+2br8dTx9AfdXDRlARZv4xOwsrXUBl"
    "EIB0dsCZ7AJ6t5EeIudwmiaD/uMzbgIje35+dLl5CcpURtOp4Pdi7Q0eJphp+KD/z1gXJqVf+DQbY7vuYCosf9fRD3LtK"
    "+oQJcUKFsu9kSr/Ro/Q54ugqI5fedOsuH1boNupP+TkErwmTizO1pKASpWqs2C8TIVNF+zjjrH4Ay3Yt3o0imADscjYNa"
    "OPOteqnR8szt33Q1dswoipFffUnCMXEx/8JahqdNO8t3jlEw2I/I+O5C8/sMDm9zWzROPufa4hCTCgQmBW/XMvXbyWrre"
    "eDh/xYP comment with spaces",
    "SHA256:dC1lJbFmQyL6w47XLK6eQPptfyIswceZaLjPje1dC7E",
)


def target(*keys: str) -> SSHTarget:
    return SSHTarget("centera", "127.0.0.1", 22, "alice", KeyFile("/nonexistent/key"), tuple(keys))


@pytest.mark.parametrize("line,expected", [ED25519, ECDSA, RSA])
def test_fingerprint_matches_ssh_keygen(line: str, expected: str) -> None:
    _, blob = parse_pinned_key(line)
    assert fingerprint(blob) == expected


def test_pinned_key_type_and_blob_are_read_with_or_without_comment() -> None:
    key_type, blob = parse_pinned_key(ED25519[0])
    assert key_type == "ssh-ed25519"
    assert blob == base64.b64decode(ED25519[0].split()[1])
    assert parse_pinned_key(" ".join(ED25519[0].split()[:2])) == (key_type, blob)


@pytest.mark.parametrize(
    "line,message",
    [
        ("ssh-ed25519", "must be 'type base64'"),
        ("ssh-ed25519 not*base64", "not valid base64"),
        ("ssh-rsa " + ED25519[0].split()[1], "says ssh-rsa but its data is a ssh-ed25519 key"),
        ("ssh-dss AAAAB3NzaC1kc3MAAACBAP", "not supported"),
    ],
)
def test_malformed_pinned_keys_are_refused(line: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_pinned_key(line)


def test_a_connection_without_pinned_keys_cannot_exist() -> None:
    pool = SSHPool()
    with pytest.raises(ValueError, match="no pinned host keys"):
        pool.connection(target())


def test_pool_reuses_one_connection_per_center_host_port_and_login() -> None:
    pool = SSHPool()
    first = pool.connection(target(ED25519[0]))
    assert pool.connection(target(ED25519[0])) is first
    other_login = SSHTarget("centera", "127.0.0.1", 22, "bob", KeyFile("/k"), (ED25519[0],))
    assert pool.connection(other_login) is not first


def test_changed_center_settings_replace_the_pooled_connection() -> None:
    pool = SSHPool()
    first = pool.connection(target(ED25519[0]))
    second = pool.connection(target(ECDSA[0]))
    assert second is not first and isinstance(second, SSHConnection)
    assert pool.connection(target(ECDSA[0])) is second
