"""The SQLite store's versioned migrations: recorded, applied once, a newer schema
refused, `store.migrate: manual` honoured, and `hpcfed db status|migrate`."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from gateway.config import load_config
from gateway.store import open_stores
from gateway.store.migrations import SchemaBehind, SchemaTooNew
from gateway.store.sqlite import schema
from gateway.store.sqlite.jobs import SQLiteJobStore

REPO = Path(__file__).resolve().parents[2]


def config_file(tmp_path: Path, **store: object) -> Path:
    path = tmp_path / "gateway.yaml"
    document = {
        "data_dir": str(tmp_path / "data"),
        "center_files": [str(REPO / "configs" / "centers" / "local.yaml")],
        "store": {"kind": "sqlite", **store},
    }
    path.write_text(yaml.safe_dump(document))
    return path


def versions(db_path: Path) -> list[int]:
    with sqlite3.connect(db_path) as db:
        return [r[0] for r in db.execute("SELECT version FROM schema_migrations ORDER BY 1")]


async def test_a_new_database_records_every_migration_once(tmp_path: Path) -> None:
    path = tmp_path / "hpcfed.db"
    for _ in range(2):  # a second open applies nothing again
        store = SQLiteJobStore(path)
        await store.open()
        await store.close()
    assert versions(path) == [m.version for m in schema.MIGRATIONS]


async def test_a_schema_newer_than_known_is_refused_naming_both_versions(tmp_path: Path) -> None:
    config = load_config(config_file(tmp_path))
    stores = open_stores(config)
    await stores.open()
    await stores.close()
    db_path = config.data_path(config.gateway.store.path)
    with sqlite3.connect(db_path) as db:
        db.execute(
            "INSERT INTO schema_migrations VALUES (?, 'from a newer release', '2026-12-01')",
            (schema.KNOWN + 1,),
        )
    stores = open_stores(config)
    with pytest.raises(SchemaTooNew) as refused:
        await stores.open()
    message = str(refused.value)
    assert f"version {schema.KNOWN + 1}" in message and f"knows ({schema.KNOWN})" in message
    # Refused before any store opened: the rows of the newer release are untouched.
    assert versions(db_path)[-1] == schema.KNOWN + 1


async def test_manual_migration_refuses_to_start_until_db_migrate_has_run(tmp_path: Path) -> None:
    path = config_file(tmp_path, migrate="manual")
    stores = open_stores(load_config(path))
    with pytest.raises(SchemaBehind, match="hpcfed db migrate"):
        await stores.open()

    hpcfed = [sys.executable, "-m", "gateway.cli"]
    run = {"capture_output": True, "text": True, "timeout": 60, "stdin": subprocess.DEVNULL}
    before = subprocess.run([*hpcfed, "db", "status", "--config", str(path), "--json"], **run)
    assert before.returncode == 0, before.stderr
    status = json.loads(before.stdout)
    assert (status["current"], status["known"]) == (0, schema.KNOWN)
    assert [m["version"] for m in status["pending"]] == [m.version for m in schema.MIGRATIONS]

    migrated = subprocess.run([*hpcfed, "db", "migrate", "--config", str(path)], **run)
    assert migrated.returncode == 0, migrated.stderr
    assert f"version {schema.KNOWN}" in migrated.stdout and "up to date" in migrated.stdout

    stores = open_stores(load_config(path))
    await stores.open()  # now it starts
    await stores.close()
