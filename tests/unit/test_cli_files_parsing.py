"""The file commands' pure parts: CENTER:PATH, argument parsing, local and remote
targets, `ls` lines, and the rewriting of a job spec's `local:` inputs."""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

import pytest

from gateway.cli.common import show_progress
from gateway.cli.files import (
    Remote,
    format_entries,
    get_target,
    mode_string,
    parse_remote,
    put_target,
)
from gateway.cli.inputs import LocalInput, prepare_local_inputs
from gateway.cli.main import build_parser
from gateway.client.core import ClientError
from gateway.client.files import _parse_content_range, sha256_file


@pytest.mark.parametrize(
    ("text", "remote"),
    [
        ("centera:data/in.bin", Remote("centera", "data/in.bin")),
        ("centera:/scratch/alice/x", Remote("centera", "/scratch/alice/x")),
        ("centera:", Remote("centera", "")),
        ("centera:a:b:c", Remote("centera", "a:b:c")),
        ("centera:with space/ünïcode", Remote("centera", "with space/ünïcode")),
    ],
)
def test_center_path_splits_at_the_first_colon(text: str, remote: Remote) -> None:
    assert parse_remote(text) == remote
    assert str(remote) == text


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("data/in.bin", "names no center: write CENTER:PATH"),
        (":data/in.bin", "names no center before the ':'"),
        ("./odd:name", "is not a center id"),
    ],
)
def test_center_path_without_a_center_is_refused(text: str, message: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match=message):
        parse_remote(text)


@pytest.mark.parametrize("command", ["ls", "rm", "mkdir", "checksum", "get"])
def test_a_remote_argument_without_colon_exits_2_with_a_clear_message(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args([command, "results/out.bin"])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "'results/out.bin' names no center: write CENTER:PATH" in err


def test_put_without_colon_in_the_destination_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(["put", "in.bin", "in.bin"])
    assert exited.value.code == 2
    assert "names no center" in capsys.readouterr().err


def test_put_parses_its_options() -> None:
    args = build_parser().parse_args(["--json", "put", "data.bin", "centera:data/", "--resume"])
    assert (args.command, args.local, args.remote) == (
        "put",
        "data.bin",
        Remote("centera", "data/"),
    )
    assert (args.json, args.resume, args.no_overwrite) == (True, True, False)
    args = build_parser().parse_args(["put", "data.bin", "centera:x", "--no-overwrite"])
    assert (args.json, args.resume, args.no_overwrite) == (False, False, True)


def test_put_resume_and_no_overwrite_together_are_a_usage_error() -> None:
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(["put", "a", "centera:a", "--resume", "--no-overwrite"])
    assert exited.value.code == 2


def test_get_local_is_optional_and_resume_is_off_by_default() -> None:
    args = build_parser().parse_args(["get", "centera:results/out.bin"])
    assert (args.remote, args.local, args.resume) == (
        Remote("centera", "results/out.bin"),
        None,
        False,
    )
    args = build_parser().parse_args(["get", "centera:out.bin", "-", "--resume"])
    assert (args.local, args.resume) == ("-", True)


def test_rm_mkdir_and_transfer_flags() -> None:
    parser = build_parser()
    assert parser.parse_args(["rm", "centera:old"]).recursive is False
    assert parser.parse_args(["rm", "centera:old", "-r"]).recursive is True
    assert parser.parse_args(["mkdir", "centera:a/b"]).parents is False
    assert parser.parse_args(["mkdir", "centera:a/b", "-p"]).parents is True
    args = parser.parse_args(["transfer", "centera:results", "centerc:in", "--wait"])
    assert (args.source, args.destination) == (
        Remote("centera", "results"),
        Remote("centerc", "in"),
    )
    assert (args.wait, args.overwrite, args.timeout) == (True, False, None)
    assert parser.parse_args(["transfer", "a:x", "b:y", "--overwrite"]).overwrite is True


def test_transfer_needs_a_center_on_both_sides(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(["transfer", "centera:results", "results"])
    assert exited.value.code == 2
    assert "'results' names no center" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("path", "target"),
    [
        ("", "data.bin"),
        ("in/", "in/data.bin"),
        ("in/renamed.bin", "in/renamed.bin"),
        ("/scratch/alice/", "/scratch/alice/data.bin"),
    ],
)
def test_put_into_a_directory_keeps_the_local_name(path: str, target: str) -> None:
    assert put_target(path, "data.bin") == target


def test_get_writes_the_remote_name_by_default_or_into_a_local_directory(
    tmp_path: Path,
) -> None:
    assert get_target("results/out.bin", None) == Path("out.bin")
    assert get_target("results/out.bin", str(tmp_path)) == tmp_path / "out.bin"
    assert get_target("results/out.bin", str(tmp_path / "x.bin")) == tmp_path / "x.bin"
    assert get_target("results/out.bin", "-") is None
    with pytest.raises(ClientError, match="names no file"):
        get_target("", None)


def test_progress_bars_only_on_a_terminal_and_never_with_json(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class Tty:
        def __init__(self, tty: bool) -> None:
            self.tty = tty

        def isatty(self) -> bool:
            return self.tty

    monkeypatch.setattr("sys.stderr", Tty(True))
    assert show_progress(argparse.Namespace(json=False)) is True
    assert show_progress(argparse.Namespace(json=True)) is False
    monkeypatch.setattr("sys.stderr", Tty(False))
    assert show_progress(argparse.Namespace(json=False)) is False


def test_ls_lines_show_mode_size_time_and_mark_directories() -> None:
    def entry(name: str, type_: str, size: int, mode: str, hour: int) -> dict[str, object]:
        mtime = f"2026-12-01T{hour:02}:00:00Z"
        return {"name": name, "type": type_, "size": size, "mode": mode, "mtime": mtime}

    entries = [
        entry("b.bin", "file", 1048576, "0644", 10),
        entry("a", "dir", 4096, "0755", 9),
        entry("l", "symlink", 5, "0777", 8),
    ]
    assert format_entries(entries) == [
        "drwxr-xr-x     4096  2026-12-01 09:00:00  a/",
        "-rw-r--r--  1048576  2026-12-01 10:00:00  b.bin",
        "lrwxrwxrwx        5  2026-12-01 08:00:00  l",
    ]
    assert mode_string({"type": "other", "mode": "bogus"}) == "?---------"


@pytest.mark.parametrize(
    ("header", "parsed"),
    [
        ("bytes 100-199/1000", (100, 1000)),
        ("bytes */1000", (None, 1000)),
        ("bytes 0-9/*", (0, None)),
        (None, (None, None)),
        ("nonsense", (None, None)),
    ],
)
def test_content_range_headers_give_the_first_byte_and_the_size(
    header: str | None, parsed: tuple[int | None, int | None]
) -> None:
    assert _parse_content_range(header) == parsed


async def test_sha256_of_a_local_file_is_computed_in_chunks_with_progress(
    tmp_path: Path,
) -> None:
    data = bytes(range(256)) * 9000  # a little over 2 chunks of 1 MiB
    (tmp_path / "f").write_bytes(data)
    seen: list[tuple[int, int | None]] = []
    digest = await sha256_file(tmp_path / "f", lambda done, total: seen.append((done, total)))
    assert digest == hashlib.sha256(data).hexdigest()
    assert len(seen) == 3 and seen[-1] == (len(data), len(data))


# ---------------------------------------------------------------- submit: local inputs


def test_local_inputs_become_uploads_relative_to_the_spec_file(tmp_path: Path) -> None:
    (tmp_path / "in.txt").write_text("hello\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "params.txt").write_text("p=1\n")
    spec = {
        "name": "x",
        "script": "cat in.txt",
        "inputs": [
            {"local": "./in.txt", "destination": "in.txt"},
            {"source": {"center": "centerc", "path": "data/in.bin"}, "destination": "in.bin"},
            {"local": "sub/params.txt"},
        ],
    }
    rewritten, uploads = prepare_local_inputs(spec, str(tmp_path / "job.yaml"))
    assert rewritten["inputs"] == [
        {"upload": True, "destination": "in.txt"},
        {"source": {"center": "centerc", "path": "data/in.bin"}, "destination": "in.bin"},
        {"upload": True, "destination": "params.txt"},
    ]
    assert uploads == [
        LocalInput(0, tmp_path / "in.txt", "in.txt"),
        LocalInput(2, tmp_path / "sub" / "params.txt", "params.txt"),
    ]
    assert spec["inputs"][0] == {"local": "./in.txt", "destination": "in.txt"}  # not changed


def test_local_inputs_of_a_spec_on_stdin_are_relative_to_the_current_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "in.txt").write_text("hello\n")
    monkeypatch.chdir(tmp_path)
    _, uploads = prepare_local_inputs({"inputs": [{"local": "in.txt"}]}, "-")
    assert uploads == [LocalInput(0, tmp_path / "in.txt", "in.txt")]


def test_absolute_local_inputs_are_kept(tmp_path: Path) -> None:
    (tmp_path / "abs.txt").write_text("x")
    spec = {"inputs": [{"local": str(tmp_path / "abs.txt"), "destination": "d/abs.txt"}]}
    _, uploads = prepare_local_inputs(spec, "elsewhere/job.yaml")
    assert uploads == [LocalInput(0, tmp_path / "abs.txt", "d/abs.txt")]


def test_a_spec_without_local_inputs_is_sent_as_written(tmp_path: Path) -> None:
    spec = {"name": "x", "inputs": [{"upload": True, "destination": "a"}]}
    assert prepare_local_inputs(spec, str(tmp_path / "job.yaml")) == (spec, [])
    assert prepare_local_inputs({"name": "x"}, "job.yaml") == ({"name": "x"}, [])


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ({"local": "missing.txt"}, r"inputs\[0\]\.local: .*missing.txt: no such file"),
        ({"local": "."}, r"inputs\[0\]\.local: .*: not a file"),
        ({"local": ""}, r"inputs\[0\]\.local: a local file name is needed"),
        ({"local": "in.txt", "upload": True}, r"inputs\[0\]: 'local' and 'upload' together"),
    ],
)
def test_bad_local_inputs_are_refused_before_anything_is_submitted(
    tmp_path: Path, item: dict[str, object], message: str
) -> None:
    (tmp_path / "in.txt").write_text("x")
    with pytest.raises(ClientError, match=message):
        prepare_local_inputs({"inputs": [item]}, str(tmp_path / "job.yaml"))
