"""Units and job spec validation."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from gateway.errors import field_path
from gateway.jobs.models import JobSpec
from gateway.units import parse_duration_seconds, parse_memory_mib


@pytest.mark.parametrize(
    ("text", "mib"),
    [
        ("8GiB", 8192),
        ("8G", 8192),
        ("512MiB", 512),
        ("512M", 512),
        ("1TiB", 1 << 20),
        ("1.5GiB", 1536),
        ("1024KiB", 1),
        ("1GB", 954),
        (2048, 2048),
        ("100", 1),
    ],
)
def test_memory_sizes_normalize_to_mib(text: object, mib: int) -> None:
    assert parse_memory_mib(text) == mib


@pytest.mark.parametrize("text", ["lots", "8XB", "-1G", "", "0M", True])
def test_bad_memory_sizes_are_refused(text: object) -> None:
    with pytest.raises(ValueError):
        parse_memory_mib(text)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90m", 5400),
        ("1.5h", 5400),
        ("01:30:00", 5400),
        ("30:00", 1800),
        ("2-00:00:00", 172800),
        ("45s", 45),
        (60, 60),
        ("1d", 86400),
    ],
)
def test_durations_normalize_to_seconds(text: object, seconds: float) -> None:
    assert parse_duration_seconds(text) == seconds


@pytest.mark.parametrize("text", ["soon", "01:61:00", "-5", "0", "5 weeks", False])
def test_bad_durations_are_refused(text: object) -> None:
    with pytest.raises(ValueError):
        parse_duration_seconds(text)


def _field_of(body: dict) -> str:
    with pytest.raises(ValidationError) as err:
        JobSpec.model_validate(body)
    return field_path(*err.value.errors()[0]["loc"])


def test_huge_arrays_are_refused_without_being_expanded() -> None:
    with pytest.raises(ValidationError, match="more than 10000 elements"):
        JobSpec.model_validate({"command": "x", "array": "0-999999999999"})
    with pytest.raises(ValidationError, match="names no index"):
        JobSpec.model_validate({"command": "x", "array": "5-2"})


def test_spec_needs_exactly_one_of_script_and_command() -> None:
    with pytest.raises(ValidationError, match="exactly one"):
        JobSpec.model_validate({"script": "a", "command": "b"})
    with pytest.raises(ValidationError, match="exactly one"):
        JobSpec.model_validate({})
    with pytest.raises(ValidationError, match="arguments"):
        JobSpec.model_validate({"script": "a", "arguments": ["x"]})


def test_spec_errors_name_their_field() -> None:
    assert _field_of({"command": "x", "resources": {"cpus_per_task": 0}}) == (
        "resources.cpus_per_task"
    )
    assert _field_of({"command": "x", "queue": "debug; rm -rf ~"}) == "queue"
    assert _field_of({"command": "x", "environment": {"A-B": "1"}}) == "environment"
    assert _field_of({"command": "x", "environment": {"A\n": "1"}}) == "environment"
    assert _field_of({"command": "x", "name": "ab\n"}) == "name"
    assert _field_of({"command": "x", "queue": "q\n"}) == "queue"
    assert _field_of({"command": "x", "extra_directives": {"pbs": ["--ab\n"]}}) == (
        "extra_directives.pbs[0]"
    )
    assert _field_of({"command": "x", "working_dir": "/tmp/\0"}) == "working_dir"
    assert _field_of({"command": "x", "working_dir": "~bob/data"}) == "working_dir"
    assert _field_of({"command": "x", "resources": {"gpu_type": "a100"}}) == "resources"


def test_spec_keeps_values_verbatim() -> None:
    env = {"X": "a'b\"c\n$d", "PAD": "  padded  ", "NL": "\nline\n"}
    spec = JobSpec.model_validate(
        {"command": "echo", "arguments": ["$(id)", "`id`", " x "], "environment": env}
    )
    assert spec.arguments == ["$(id)", "`id`", " x "]
    assert spec.environment == env
