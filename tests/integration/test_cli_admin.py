"""The admin commands (`hpcfed token`, `hpcfed vault`, `hpcfed audit`) as processes."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from gateway.identity.audit import read_audit
from tests.integration.test_cli import KEY, hpcfed


@pytest.fixture
def config(tmp_path: Path) -> Path:
    (tmp_path / "centers").mkdir()
    (tmp_path / "centers" / "hpc.yaml").write_text(
        f"id: hpc\ntype: slurm\nssh: {{host: h, host_keys: ['{KEY}']}}\n"
        "users: {ada: {login: ada}}\n"
    )
    (tmp_path / "centers" / "local.yaml").write_text("id: local\ntype: local\n")
    path = tmp_path / "gateway.yaml"
    path.write_text(f"data_dir: {tmp_path}/data\ncenter_files: [centers/*.yaml]\n")
    return path


def admin(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return hpcfed(*args, "--config", str(config))


def test_token_issue_prints_only_the_token_and_audits_it(config: Path) -> None:
    result = admin(config, "token", "issue", "--user", "ada", "--role", "researcher")
    assert result.returncode == 0, result.stderr
    token = result.stdout.strip()
    assert token.count(".") == 2 and "\n" not in token
    assert "for ada (researcher)" in result.stderr
    (entry,) = read_audit(config.parent / "data" / "audit.log")
    assert (entry["action"], entry["outcome"], entry["target"]["user"]) == (
        "tokens.issue",
        "ok",
        "ada",
    )
    assert token not in (config.parent / "data" / "audit.log").read_text()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--user", "bea", "--role", "center-admin"), "centers: "),
        (("--user", "bea", "--role", "wizard"), "roles: "),
        (("--user", "Not A User", "--role", "researcher"), "user: "),
        (("--user", "ada", "--role", "admin", "--ttl", "90d"), "ttl: "),
        (("--user", "ada", "--role", "admin", "--ttl", "soon"), "--ttl: "),
    ],
)
def test_token_issue_refusals_name_the_field(
    config: Path, args: tuple[str, ...], message: str
) -> None:
    result = admin(config, "token", "issue", *args)
    assert result.returncode == 1
    assert result.stdout == ""
    assert message in result.stderr


def test_signing_keys_rotate_and_the_last_one_cannot_be_retired(config: Path) -> None:
    assert admin(config, "token", "rotate-key").returncode == 0
    listed = admin(config, "token", "keys").stdout.splitlines()
    assert len(listed) == 2 and listed[0].endswith("active") and listed[1].endswith("verify-only")
    newest, oldest = (line.split()[0] for line in listed)
    assert admin(config, "token", "retire-key", oldest).returncode == 0
    refused = admin(config, "token", "retire-key", newest)
    assert refused.returncode == 1 and "is the only one" in refused.stderr
    unknown = admin(config, "token", "retire-key", "nosuchkey")
    assert unknown.returncode == 1


def test_vault_add_key_stores_a_key_and_never_echoes_a_bad_one(
    config: Path, tmp_path: Path
) -> None:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "k")], check=True
    )
    result = admin(
        config, "vault", "add-key", "--center", "hpc", "--login", "ada",
        "--key-file", str(tmp_path / "k"), "--remove-source",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "stored ssh-ed25519 key SHA256:" in result.stdout
    assert not (tmp_path / "k").exists()
    listed = admin(config, "vault", "list").stdout
    assert "ssh/hpc/ada" in listed and "PRIVATE" not in listed

    (tmp_path / "bad").write_text("-----BEGIN OPENSSH PRIVATE KEY-----\nSECRETSTUFF\n")
    bad = admin(
        config, "vault", "add-key", "--center", "hpc", "--login", "ada",
        "--key-file", str(tmp_path / "bad"),
    )  # fmt: skip
    assert bad.returncode == 1
    assert "--key-file: " in bad.stderr and "SECRETSTUFF" not in bad.stderr
    for center, why in (("nowhere", "no center named"), ("local", "is local")):
        refused = admin(
            config, "vault", "add-key", "--center", center, "--login", "ada",
            "--key-file", str(tmp_path / "bad"),
        )  # fmt: skip
        assert refused.returncode == 1 and why in refused.stderr

    assert admin(config, "vault", "remove", "--center", "hpc", "--login", "ada").returncode == 0
    assert "ssh/hpc/ada" not in admin(config, "vault", "list").stdout
    actions = [
        json.loads(line)["action"] for line in admin(config, "--json", "audit").stdout.splitlines()
    ]
    assert actions == ["vault.add_key", "vault.remove_key"]


def test_a_world_readable_master_key_is_refused(config: Path) -> None:
    assert admin(config, "token", "keys").returncode == 0
    master = config.parent / "data" / "master.key"
    master.chmod(0o644)
    result = admin(config, "token", "keys")
    assert result.returncode == 1
    assert "chmod 600" in result.stderr
    assert master.read_text().strip() not in result.stderr
