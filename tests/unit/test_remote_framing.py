"""Remote commands run under /bin/sh whatever the login shell, and their answers are framed.

Each case runs a real login shell the way sshd does (`$SHELL -c <command line>`), with
startup files that print banners on stdout and stderr, and reads the answer back.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from adapters.transport import framing

BANNER = "Welcome to Center A - quota: 80% used"
#: Each shell's startup file for a non-interactive `-c` run, and a line in its syntax
#: that prints the banner on stdout and on stderr.
STARTUP = {
    "bash": (".bashrc", f'echo "{BANNER}"; echo "{BANNER} (stderr)" >&2'),
    "zsh": (".zshenv", f'echo "{BANNER}"; echo "{BANNER} (stderr)" >&2'),
    "tcsh": (".cshrc", f'echo "{BANNER}"; sh -c \'echo "$0" >&2\' "{BANNER} (stderr)"'),
    "fish": (".config/fish/config.fish", f'echo "{BANNER}"; echo "{BANNER} (stderr)" >&2'),
}
SHELLS = list(STARTUP)
#: Login shells real centers give their users: under CI each must be installed.
REQUIRED = ("bash", "tcsh", "zsh", "fish")


def _home(tmp_path: Path, shell: str, line: str | None = None) -> Path:
    if not shutil.which(shell):
        if shell in REQUIRED and os.environ.get("CI") == "true":
            pytest.fail(f"{shell} is not installed (apt-get install {shell})")
        pytest.skip(f"{shell} is not installed")
    home = tmp_path / shell
    name, default = STARTUP[shell]
    rc = home / name
    rc.parent.mkdir(parents=True, exist_ok=True)
    rc.write_text((line if line is not None else default) + "\n")
    return home


def _login(shell: str, home: Path, command_line: str, stdin: bytes | None) -> tuple:
    # bash reads .bashrc for `bash -c` when it sees it was started by sshd (SSH_CLIENT).
    env = {"HOME": str(home), "PATH": os.environ["PATH"], "SSH_CLIENT": "127.0.0.1 1 22"}
    proc = subprocess.run(
        [shutil.which(shell) or shell, "-c", command_line],
        input=stdin if stdin is not None else b"",
        capture_output=True,
        env=env,
        cwd=home,
        timeout=30,
    )
    return proc.returncode, proc.stdout, proc.stderr


def _run(shell: str, home: Path, command: str, stdin: bytes | None = None) -> framing.Unframed:
    mark = framing.new_mark()
    rc, out, err = _login(shell, home, framing.wrap(command, mark, stdin=stdin is not None), stdin)
    framed = framing.unframe(out, err, mark)
    assert framed is not None, (rc, out, err)
    assert framed.exit_status == rc
    return framed


@pytest.mark.parametrize("shell", SHELLS)
def test_banners_of_startup_files_are_set_aside(tmp_path: Path, shell: str) -> None:
    home = _home(tmp_path, shell)
    # The startup file really prints in this shell: the banner must be there to set aside.
    _, out, err = _login(shell, home, "true", None)
    assert BANNER.encode() in out and BANNER.encode() in err
    framed = _run(shell, home, "echo out; echo err >&2; id -un >/dev/null; exit 3")
    assert (framed.exit_status, framed.stdout, framed.stderr) == (3, b"out\n", b"err\n")
    assert BANNER.encode() in framed.noise


@pytest.mark.parametrize("shell", SHELLS)
def test_sh_syntax_that_csh_and_fish_reject_runs_as_written(tmp_path: Path, shell: str) -> None:
    home = _home(tmp_path, shell)
    command = (
        "trap 'echo trapped' EXIT; x=$(printf '%s' 'a!b'); echo \"$x ${HOME:+set}\" "
        "`echo back`; for i in 1 2; do printf '%s' \"$i\"; done; echo; "
        "cat <<'EOF'\nheredoc $x\nEOF"
    )
    framed = _run(shell, home, command)
    assert framed.exit_status == 0, framed.stderr
    assert framed.stdout == b"a!b set back\n12\nheredoc $x\ntrapped\n"


@pytest.mark.parametrize("shell", SHELLS)
def test_binary_stdout_and_stdin_pass_byte_exact(tmp_path: Path, shell: str) -> None:
    home = _home(tmp_path, shell)
    data = bytes(range(256)) * 64 + b"\n" + framing.new_mark() + b" 0\n" + b"no newline"
    framed = _run(shell, home, "cat", stdin=data)
    assert framed.stdout == data and framed.exit_status == 0
    # An exec in the command replaces only its subshell: the end mark still comes.
    framed = _run(shell, home, "exec head -c 5", stdin=data)
    assert framed.stdout == data[:5] and framed.exit_status == 0


@pytest.mark.parametrize("shell", SHELLS)
def test_a_startup_file_that_exits_is_named_with_what_it_printed(
    tmp_path: Path, shell: str
) -> None:
    home = _home(tmp_path, shell, f'echo "{BANNER}"; exec false')
    mark = framing.new_mark()
    rc, out, err = _login(shell, home, framing.wrap("echo never", mark, stdin=False), None)
    assert framing.unframe(out, err, mark) is None
    error = framing.broken("centera", "carol", out, err, f"exit {rc}")
    assert isinstance(error, framing.LoginEnvironmentBroken)
    assert "startup files" in error.message and BANNER in error.message
    assert "never" not in out.decode()


def test_an_answer_cut_off_before_its_end_has_no_exit_status() -> None:
    mark = framing.new_mark()
    framed = framing.unframe(b"noise" + mark + b"\npartial", mark + b"\n", mark)
    assert framed is not None and framed.exit_status is None


def test_the_stream_reader_keeps_exactly_the_body_whatever_the_pieces() -> None:
    mark = framing.new_mark()
    body = bytes(range(256)) * 300
    wire = b"Welcome\n" + mark + b"\n" + body + b"\n" + mark + b" 0\n" + b"late noise"
    for size in (1, 7, 100, 4096, len(wire)):
        reader = framing.StreamUnframer(mark)
        got = b"".join(reader.feed(wire[i : i + size]) for i in range(0, len(wire), size))
        got += reader.finish()
        assert got == body and reader.exit_status == 0
        assert reader.noise == b"Welcome\nlate noise"
    cut = framing.StreamUnframer(mark)
    got = cut.feed(mark + b"\n" + body[:5000]) + cut.finish()
    assert cut.exit_status is None and len(got) < 5000


@pytest.mark.parametrize("shell", SHELLS)
def test_every_byte_a_script_may_hold_reaches_sh_unchanged(tmp_path: Path, shell: str) -> None:
    home = _home(tmp_path, shell)
    text = "".join(chr(c) for c in range(1, 128)) + "ü 中 \\c \\0101 %s %% !! $$ '\"`"
    command = "cat <<'EOF'\n" + text + "\nEOF"
    framed = _run(shell, home, command)
    assert framed.stdout.decode() == text + "\n"


def test_a_command_too_long_for_one_argument_is_refused_before_it_is_sent() -> None:
    framing.wrap("echo " + "x" * 100_000, framing.new_mark(), stdin=False)  # fits
    with pytest.raises(ValueError, match="longer than"):
        framing.wrap("echo " + "x" * framing.MAX_COMMAND, framing.new_mark(), stdin=False)


@pytest.mark.parametrize("shell", SHELLS)
def test_the_sftp_server_starts_right_after_its_start_mark(tmp_path: Path, shell: str) -> None:
    home = _home(tmp_path, shell)
    if not any(os.access(p, os.X_OK) for p in framing.SFTP_SERVERS):
        pytest.skip("no OpenSSH sftp-server installed")
    mark = framing.new_mark()
    # With its stdin at its end at once, sftp-server exits without a word.
    rc, out, _ = _login(shell, home, framing.wrap_sftp_server(mark), b"")
    assert rc == 0
    assert out.startswith(BANNER.encode())
    assert out.endswith(mark + b" sh\n" + mark + b"\n")


def test_what_a_login_printed_is_quoted_short_and_without_what_looks_secret() -> None:
    printed = b"Welcome\r\n\x1b[1mquota\x1b[0m: 80% used\nexport API_TOKEN=abc123\n"
    printed += b"ghp_" + b"A" * 36 + b"\n" + b"x" * 500
    said = framing.excerpt(printed)
    assert said.startswith("Welcome [1mquota [0m: 80% used export API_TOKEN=[redacted] [redacted]")
    assert "abc123" not in said and "AAAA" not in said and len(said) <= 80
