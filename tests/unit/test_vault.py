"""The vault: secrets encrypted at rest under a master key from the environment or a file."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from gateway.config_models import VaultConfig
from gateway.identity.vault import Vault, VaultError, load_master_key, ssh_key_name

ENV = "HPCFED_TEST_MASTER_KEY"
FAKE_SSH_KEY = (
    b"-----BEGIN OPENSSH PRIVATE KEY-----\n"
    b"b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW\n"
    b"QyNTUxOQAAACDFAKEFAKEFAKEFAKEFAKEFAKEFAKEFAKEFAKEFAKEFAKEFAKEFAKE=\n"
    b"-----END OPENSSH PRIVATE KEY-----\n"
)


@pytest.fixture
def config(monkeypatch: pytest.MonkeyPatch) -> VaultConfig:
    monkeypatch.delenv(ENV, raising=False)
    return VaultConfig(master_key_env=ENV)


@pytest.fixture
def data_path(tmp_path: Path) -> Callable[[str], Path]:
    def resolve(value: str) -> Path:
        path = Path(os.path.expanduser(value))
        return path if path.is_absolute() else tmp_path / "data" / path

    return resolve


@pytest.fixture
def vault(config: VaultConfig, data_path: Callable[[str], Path]) -> Vault:
    return Vault.open(config, data_path, create=True)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_put_then_get_returns_the_secret(vault: Vault) -> None:
    vault.put(ssh_key_name("centera", "alice"), FAKE_SSH_KEY, added_by="test")
    assert vault.get("ssh/centera/alice") == FAKE_SSH_KEY
    assert vault.has("ssh/centera/alice")
    info = vault.info("ssh/centera/alice")
    assert info.meta == {"added_by": "test"}
    assert info.created.tzinfo is not None


def test_put_overwrites_an_entry(vault: Vault) -> None:
    vault.put("a/b", b"one")
    vault.put("a/b", b"two")
    assert vault.get("a/b") == b"two"


def test_vault_file_holds_no_plaintext(vault: Vault) -> None:
    vault.put("ssh/centera/alice", FAKE_SSH_KEY)
    raw = vault.path.read_bytes()
    assert FAKE_SSH_KEY not in raw
    assert b"PRIVATE KEY" not in raw
    assert b"b3BlbnNzaC1rZXktdjEA" not in raw
    data = json.loads(raw)
    assert data["format"] == "hpcfed-vault"
    assert data["version"] == 1
    assert set(data["entries"]["ssh/centera/alice"]) == {"created", "meta", "secret"}


def test_vault_file_is_mode_0600(vault: Vault) -> None:
    vault.put("x", b"secret")
    assert mode(vault.path) == 0o600


def test_wrong_master_key_is_refused_without_revealing_anything(vault: Vault) -> None:
    vault.put("ssh/centera/alice", FAKE_SSH_KEY)
    other_key = Fernet.generate_key()
    stranger = Vault(vault.path, other_key)
    with pytest.raises(VaultError) as caught:
        stranger.get("ssh/centera/alice")
    message = str(caught.value)
    assert "ssh/centera/alice" in message
    assert "cannot be decrypted" in message
    assert "PRIVATE KEY" not in message
    assert other_key.decode() not in message
    stored = json.loads(vault.path.read_text())["entries"]["ssh/centera/alice"]["secret"]
    assert stored not in message


def test_secrets_cannot_be_swapped_between_entries(vault: Vault) -> None:
    vault.put("ssh/c/alice", b"alice-key")
    vault.put("ssh/c/bob", b"bob-key")
    data = json.loads(vault.path.read_text())
    entries = data["entries"]
    entries["ssh/c/alice"]["secret"], entries["ssh/c/bob"]["secret"] = (
        entries["ssh/c/bob"]["secret"],
        entries["ssh/c/alice"]["secret"],
    )
    vault.path.write_text(json.dumps(data))
    with pytest.raises(VaultError, match="cannot be decrypted"):
        vault.get("ssh/c/alice")


def test_missing_entry_is_named(vault: Vault) -> None:
    with pytest.raises(VaultError, match="vault: no entry ssh/x/y"):
        vault.get("ssh/x/y")


def test_master_key_file_is_created_0600_when_asked(
    config: VaultConfig, data_path: Callable[[str], Path]
) -> None:
    key = load_master_key(config, data_path, create=True)
    path = data_path(config.master_key_file)
    assert mode(path) == 0o600
    assert mode(path.parent) == 0o700
    assert path.read_bytes().strip() == key
    assert load_master_key(config, data_path, create=False) == key


def test_missing_master_key_is_refused_without_create(
    config: VaultConfig, data_path: Callable[[str], Path]
) -> None:
    with pytest.raises(VaultError, match=f"no master key: set {ENV} or create") as caught:
        Vault.open(config, data_path)
    assert str(data_path(config.master_key_file)) in str(caught.value)
    assert not data_path(config.master_key_file).exists()


def test_world_readable_master_key_file_is_refused(
    config: VaultConfig, data_path: Callable[[str], Path]
) -> None:
    load_master_key(config, data_path, create=True)
    path = data_path(config.master_key_file)
    path.chmod(0o644)
    with pytest.raises(VaultError, match="chmod 600") as caught:
        load_master_key(config, data_path, create=False)
    assert str(path) in str(caught.value)
    assert "0644" in str(caught.value)


def test_invalid_master_key_file_is_refused(
    config: VaultConfig, data_path: Callable[[str], Path]
) -> None:
    path = data_path(config.master_key_file)
    path.parent.mkdir(parents=True)
    path.write_text("not-a-key\n")
    path.chmod(0o600)
    with pytest.raises(VaultError, match=str(path)) as caught:
        load_master_key(config, data_path, create=False)
    assert "not-a-key" not in str(caught.value)


def test_master_key_from_environment_wins_over_file(
    config: VaultConfig, data_path: Callable[[str], Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    file_key = load_master_key(config, data_path, create=True)
    env_key = Fernet.generate_key()
    monkeypatch.setenv(ENV, env_key.decode())
    assert load_master_key(config, data_path, create=False) == env_key != file_key


def test_invalid_environment_key_is_refused_without_echoing_it(
    config: VaultConfig, data_path: Callable[[str], Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV, "sup3r-s3cret-but-not-fernet")
    with pytest.raises(VaultError) as caught:
        load_master_key(config, data_path, create=True)
    assert ENV in str(caught.value)
    assert "sup3r-s3cret" not in str(caught.value)


def test_entry_put_by_another_instance_is_seen_without_reopening(
    vault: Vault, config: VaultConfig, data_path: Callable[[str], Path]
) -> None:
    vault.put("first", b"1")
    assert vault.names() == ["first"]
    cli = Vault.open(config, data_path)
    cli.put("ssh/centera/bob", b"bob-key")
    assert vault.get("ssh/centera/bob") == b"bob-key"
    assert vault.names() == ["first", "ssh/centera/bob"]


def test_remove_deletes_an_entry(vault: Vault) -> None:
    vault.put("a", b"1")
    assert vault.remove("a") is True
    assert not vault.has("a")
    assert vault.remove("a") is False
    with pytest.raises(VaultError):
        vault.get("a")


def test_names_filters_by_prefix_and_sorts(vault: Vault) -> None:
    for name in ("ssh/b/x", "signing/k2", "ssh/a/y", "signing/k1"):
        vault.put(name, b"s")
    assert vault.names("signing/") == ["signing/k1", "signing/k2"]
    assert vault.names("ssh/") == ["ssh/a/y", "ssh/b/x"]
    assert vault.names() == ["signing/k1", "signing/k2", "ssh/a/y", "ssh/b/x"]


@pytest.mark.parametrize(
    "name", ["", "Upper", "/lead", "trail/", "a//b", "-x", "a b", "a/b\n", "..", "ü"]
)
def test_bad_entry_names_are_refused(vault: Vault, name: str) -> None:
    with pytest.raises(ValueError, match="not valid"):
        vault.put(name, b"s")


def test_stamp_changes_when_the_vault_changes(vault: Vault) -> None:
    assert vault.stamp() is None
    vault.put("a", b"1")
    first = vault.stamp()
    assert first is not None
    vault.put("bb", b"2")
    assert vault.stamp() != first


def test_group_readable_vault_file_is_refused(vault: Vault) -> None:
    vault.put("a", b"1")
    vault.path.chmod(0o640)
    with pytest.raises(VaultError, match="chmod 600"):
        vault.get("a")


def test_file_in_another_format_is_refused(vault: Vault) -> None:
    vault.path.parent.mkdir(parents=True, exist_ok=True)
    vault.path.write_text('{"something": "else"}')
    vault.path.chmod(0o600)
    with pytest.raises(VaultError, match=str(vault.path)):
        vault.names()
