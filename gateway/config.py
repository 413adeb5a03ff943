"""Loading and validating the gateway config and the center files it names.

A bad file is refused at start with its path, the field and the reason, e.g.
``configs/centers/x.yaml: ssh.port: Input should be a valid integer, got 'abc'``.
"""

from __future__ import annotations

import glob
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from gateway.apps.models import AppDefinition
from gateway.centers.config import CenterConfig
from gateway.config_models import GatewayConfig

M = TypeVar("M", bound=BaseModel)


class ConfigError(Exception):
    """A config file is missing, unreadable or invalid. The message is for humans."""


@dataclass(frozen=True)
class LoadedConfig:
    gateway: GatewayConfig
    centers: dict[str, CenterConfig]
    path: Path
    data_dir: Path
    #: The application definitions of `app_files`, by name.
    apps: dict[str, AppDefinition] = field(default_factory=dict)

    def data_path(self, value: str) -> Path:
        """A path from the config: absolute, ``~``-expanded, or relative to data_dir."""
        path = Path(os.path.expanduser(value))
        return path if path.is_absolute() else self.data_dir / path


def format_validation_error(source: str, error: ValidationError) -> str:
    lines = []
    for item in error.errors():
        loc = ".".join(str(part) for part in item["loc"]) or "(top level)"
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] not in ("missing", "extra_forbidden") and "input" in item:
            message += f", got {item['input']!r}"
        if item["type"] == "extra_forbidden":
            message = "unknown field"
        lines.append(f"{source}: {loc}: {message}")
    return "\n".join(lines)


def _read_yaml(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None


def validate_file(path: Path, model: type[M]) -> M:
    data = _read_yaml(path)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: (top level): must be a mapping, got {type(data).__name__}")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(str(path), exc)) from None


def load_center_file(path: Path) -> CenterConfig:
    return validate_file(path, CenterConfig)


def _matches(base: Path, pattern: str) -> list[str]:
    full = Path(os.path.expanduser(pattern))
    full = full if full.is_absolute() else base / full
    return sorted(glob.glob(str(full))) if glob.has_magic(str(full)) else [str(full)]


def load_app_files(base: Path, patterns: list[str]) -> dict[str, AppDefinition]:
    """The definitions the patterns name (a glob that matches nothing names none); a
    file is named after its application (`lammps.yaml` holds `name: lammps`)."""
    apps: dict[str, AppDefinition] = {}
    for pattern in patterns:
        for match in _matches(base, pattern):
            path = Path(match)
            app = validate_file(path, AppDefinition)
            if path.stem != app.name:
                raise ConfigError(f"{match}: name: {app.name!r} must be the file's name")
            if app.name in apps:
                raise ConfigError(f"{match}: name: application {app.name!r} is defined twice")
            apps[app.name] = app
    return apps


def load_config(path: str | Path) -> LoadedConfig:
    """Load gateway.yaml and every center file it names; refuse on the first bad file."""
    config_path = Path(path)
    gateway = validate_file(config_path, GatewayConfig)
    base = config_path.parent
    centers: dict[str, CenterConfig] = {}
    origin: dict[str, Path] = {}
    for pattern in gateway.center_files:
        for match in _matches(base, pattern):
            center = load_center_file(Path(match))
            if center.id in centers:
                raise ConfigError(
                    f"{match}: id: center {center.id!r} is already defined in {origin[center.id]}"
                )
            centers[center.id] = center
            origin[center.id] = Path(match)
    if not centers:
        raise ConfigError(f"{config_path}: center_files: no center is configured")
    if gateway.default_center and gateway.default_center not in centers:
        raise ConfigError(
            f"{config_path}: default_center: {gateway.default_center!r} is not a configured center"
        )
    data_dir = Path(os.path.expanduser(os.environ.get("HPCFED_DATA_DIR") or gateway.data_dir))
    if not data_dir.is_absolute():
        data_dir = (base / data_dir).resolve()
    apps = load_app_files(base, gateway.app_files)
    return LoadedConfig(
        gateway=gateway, centers=centers, path=config_path, data_dir=data_dir, apps=apps
    )


def center_schema() -> str:
    """The JSON Schema of a center file, as kept in configs/schema/center.schema.json."""
    schema = CenterConfig.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "hpcfed center configuration"
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def app_schema() -> str:
    """The JSON Schema of an application definition (configs/schema/app.schema.json)."""
    schema = AppDefinition.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "hpcfed application definition"
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"
