"""Loading config files: a bad file is refused with its path, field and reason."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config import ConfigError, center_schema, load_center_file, load_config

REPO = Path(__file__).resolve().parents[2]
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJmLp0A8aOzNGzhjjHD4HoJ2HIlW3cZk3nY4lYZk1B8E"


def _center(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "x.yaml"
    path.write_text(text)
    return path


def test_bad_port_is_refused_with_file_field_and_value(tmp_path: Path) -> None:
    path = _center(
        tmp_path,
        f"id: x\ntype: slurm\nssh: {{host: h, port: abc, login: u, host_keys: ['{KEY}']}}\n",
    )
    with pytest.raises(ConfigError) as err:
        load_center_file(path)
    assert str(err.value).startswith(f"{path}: ssh.port: ")
    assert "'abc'" in str(err.value)


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("id: x\ntype: slurm\n", "(top level): a slurm center needs an 'ssh' section"),
        ("id: X!\ntype: local\n", "id: "),
        ("id: x\ntype: lsf\n", "type: "),
        ("id: x\ntype: local\ncolour: red\n", "colour: unknown field"),
        ("id: x\ntype: local\nlocal: {max_running: 0}\n", "local.max_running: "),
        ("- just\n- a list\n", "(top level): must be a mapping"),
        ("id: [unclosed\n", "not valid YAML"),
    ],
)
def test_invalid_center_files_say_where(tmp_path: Path, text: str, where: str) -> None:
    with pytest.raises(ConfigError, match=None) as err:
        load_center_file(_center(tmp_path, text))
    assert where in str(err.value)


def test_pinned_host_keys_must_look_like_keys(tmp_path: Path) -> None:
    path = _center(
        tmp_path,
        "id: x\ntype: slurm\nssh: {host: h, login: u, host_keys: [trust-me]}\n",
    )
    with pytest.raises(ConfigError, match=r"ssh\.host_keys: .*ssh-ed25519"):
        load_center_file(path)


def test_shipped_configs_are_valid() -> None:
    loaded = load_config(REPO / "configs" / "gateway.yaml")
    assert list(loaded.centers) == ["local"]
    for path in (REPO / "configs" / "centers").glob("*.yaml"):
        load_center_file(path)


def test_duplicate_center_ids_are_refused(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("id: same\ntype: local\n")
    (tmp_path / "b.yaml").write_text("id: same\ntype: local\n")
    (tmp_path / "gateway.yaml").write_text("center_files: ['*.yaml']\n")
    (tmp_path / "gateway.yaml").rename(tmp_path / "gw.yml")
    with pytest.raises(ConfigError, match="already defined"):
        load_config(tmp_path / "gw.yml")


def test_missing_center_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "gw.yml").write_text("center_files: [nowhere.yaml]\n")
    with pytest.raises(ConfigError, match=r"nowhere\.yaml: cannot read"):
        load_config(tmp_path / "gw.yml")


def test_committed_center_schema_matches_the_models() -> None:
    committed = (REPO / "configs" / "schema" / "center.schema.json").read_text()
    assert committed == center_schema(), "run `make schema` and commit the result"
