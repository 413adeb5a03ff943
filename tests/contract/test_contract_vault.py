"""The VaultEntries contract (where the vault's encrypted entries are kept, the
signing keyring's among them), over every implementation (tests/contract/conftest.py)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest
from cryptography.fernet import Fernet

from gateway.identity.keyring import Keyring
from gateway.identity.vault import Vault, VaultEntries
from tests.contract.conftest import Backend

ENTRY = {"created": "2026-01-01T00:00:00+00:00", "meta": {"k": "v"}, "secret": "token"}


@pytest.fixture
def entries(vault_backend: Backend) -> VaultEntries:
    return vault_backend.make()


def test_what_a_change_leaves_is_read_back(entries: VaultEntries) -> None:
    assert entries.read() == {} and entries.stamp() is None
    with entries.change() as stored:
        assert stored == {}
        stored["ssh/centera/alice"] = ENTRY
    assert entries.read() == {"ssh/centera/alice": ENTRY}
    with entries.change() as stored:
        del stored["ssh/centera/alice"]
        stored["signing/k1"] = {**ENTRY, "secret": "other"}
    assert entries.read() == {"signing/k1": {**ENTRY, "secret": "other"}}


def test_a_failed_change_keeps_nothing(entries: VaultEntries) -> None:
    with entries.change() as stored:
        stored["a"] = ENTRY
    stamp = entries.stamp()
    with pytest.raises(RuntimeError), entries.change() as stored:
        stored["b"] = ENTRY
        raise RuntimeError("stop")
    assert entries.read() == {"a": ENTRY} and entries.stamp() == stamp


def test_the_stamp_changes_with_the_entries(entries: VaultEntries) -> None:
    stamps = []
    for n in range(3):
        with entries.change() as stored:
            stored[f"e{n}"] = {**ENTRY, "secret": "x" * (n + 1)}
        stamps.append(entries.stamp())
    assert None not in stamps and len(set(stamps)) == 3
    with entries.change():
        pass  # nothing changed
    assert entries.stamp() == stamps[-1]


def test_writers_at_the_same_place_lose_no_change(vault_backend: Backend) -> None:
    """The CLI and the gateway (two objects, two threads here) write at once."""
    writers = [vault_backend.make() for _ in range(4)]

    def write(n: int) -> None:
        for i in range(10):
            with writers[n].change() as stored:
                stored[f"w{n}/{i}"] = ENTRY

    threads = [threading.Thread(target=write, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(vault_backend.make().read()) == 40


def test_the_vault_and_keyring_keep_their_secrets_there(entries: VaultEntries) -> None:
    key = Fernet.generate_key()
    vault = Vault(entries, key)
    vault.put("ssh/centera/alice", b"PRIVATE KEY", login="alice")
    stored = entries.read()["ssh/centera/alice"]
    assert b"PRIVATE KEY" not in repr(stored).encode()  # only the encrypted form
    assert Vault(entries, key).get("ssh/centera/alice") == b"PRIVATE KEY"
    keyring = Keyring(vault)
    kid = keyring.ensure()
    assert [k.kid for k in Keyring(Vault(entries, key)).keys()] == [kid]
    assert set(entries.read()) == {"ssh/centera/alice", f"signing/{kid}"}


def test_a_change_through_one_object_is_seen_by_another(vault_backend: Backend) -> None:
    """The CLI (or another replica) rotates a key: a running gateway's entries see it,
    and its stamp moves, so the keyring reloads (the stamp may lag by a short interval:
    awaited here with a deadline)."""
    writer, reader = vault_backend.make(), vault_backend.make()
    with writer.change() as stored:
        stored["signing/k1"] = ENTRY
    assert reader.read() == {"signing/k1": ENTRY}
    seen = _stamp_moves(reader, reader.stamp())
    with writer.change() as stored:
        stored["signing/k2"] = {**ENTRY, "secret": "new"}
    assert set(reader.read()) == {"signing/k1", "signing/k2"}
    assert seen(), "the stamp of the other object never changed"


def _stamp_moves(entries: VaultEntries, before: object) -> Callable[[], bool]:
    def moved() -> bool:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if entries.stamp() != before:
                return True
            time.sleep(0.05)
        return False

    return moved
