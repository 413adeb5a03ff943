"""Remote commands that run under /bin/sh whatever the login shell, with framed answers.

sshd hands every exec request to the login's shell (`$SHELL -c <command>`), which
first reads the login's startup files: a `.bashrc` or `.cshrc` that prints a
banner writes it into our stdout or stderr, and a tcsh or fish login shell does
not speak sh at all. So the command line the login shell sees is one that every
shell (sh, bash, zsh, ksh, csh, tcsh, fish) passes on literally:

    exec /bin/sh -c 'eval "$(printf %b "<script, octal escapes for odd bytes>")"'

(single quotes in every one of them, holding no quote, newline, `!`, `$` or
backslash pair that any of them acts on; `carry`). The script sh then runs
prints a per-call random mark first on stdout and on stderr, runs the command
in a subshell (so an `exec` or `exit` in it cannot skip what follows), and ends
with `<mark> <exit status>` on stdout and `<mark>` on stderr. The reader keeps
only what lies between the marks, so anything a startup file prints before (or
a stray background process after) is never taken for the command's answer, and
takes the exit status from the end mark. Binary output passes untouched.

No start mark means the login shell never ran the script (a startup file
exited, or failed, or the shell cannot run /bin/sh): `LoginEnvironmentBroken`,
quoting a short piece of what the login printed. A start mark without its end
mark means the command was cut off: its outcome is unknown.
"""

from __future__ import annotations

import re
import secrets
import shlex
from dataclasses import dataclass

from adapters.errors import CenterUnavailable


def quote(value: str) -> str:
    """The one place a value is quoted for a remote shell."""
    return shlex.quote(value)


#: The longest command line sent: one argument of the login shell's, below Linux's
#: 128 KiB limit for a single argument.
MAX_COMMAND = 120_000
#: What a startup file may print before the start mark before we stop waiting for it.
MAX_PREAMBLE = 1 << 20
_EXCERPT = 80
_SECRET_VALUE = re.compile(r"(?i)\b(\w*(?:pass|secret|token|key|auth)\w*\s*[=:]\s*)\S+")
_LONG_TOKEN = re.compile(r"[A-Za-z0-9+/=_.-]{24,}")


class LoginEnvironmentBroken(CenterUnavailable):
    """The login shell or its startup files kept the gateway's command from running."""


#: Bytes the carried script keeps as they are; every other byte becomes an octal escape.
_PLAIN = frozenset(range(0x20, 0x7F)) - frozenset(b"'\\!$`\"%")


def carry(script: str) -> str:
    """A command line that every login shell hands to /bin/sh as `script`, unchanged.

    Inside the single quotes there is no quote, backslash pair, `!`, `$` or newline for
    any shell to act on; sh's own printf (a builtin: no process) turns the `\\0NNN`
    escapes back into the script's bytes."""
    escaped = "".join(chr(b) if b in _PLAIN else f"\\0{b:03o}" for b in script.encode())
    line = f'exec /bin/sh -c \'eval "$(printf %b "{escaped}")"\''
    if len(line) > MAX_COMMAND:
        # The kernel refuses longer arguments (MAX_ARG_STRLEN): the login shell would
        # never start, which would read as a broken login environment.
        raise ValueError(f"a remote command of {len(line)} bytes is longer than {MAX_COMMAND}")
    return line


def new_mark() -> bytes:
    return b"hpcfed-" + secrets.token_hex(16).encode()


def wrap(command: str, mark: bytes, *, stdin: bool) -> str:
    """The command line to send so that `command` runs under /bin/sh with framed answers.

    Without `stdin` the command reads /dev/null: the gateway never sends an EOF on a
    channel it writes nothing to (see `SSHConnection._exec`)."""
    m = mark.decode()
    script = (
        f"printf '%s\\n' {m}; printf '%s\\n' {m} >&2; "
        # A CDPATH from a profile makes `cd` print the directory it changed to.
        "unset CDPATH; "
        + ("" if stdin else "exec </dev/null; ")
        + f"(\n{command}\n)\n"
        + f"hpcfed_s=$?; printf '\\n%s %d\\n' {m} \"$hpcfed_s\"; "
        + f"printf '\\n%s\\n' {m} >&2; exit \"$hpcfed_s\"\n"
    )
    return carry(script)


#: Where distributions install OpenSSH's sftp-server.
SFTP_SERVERS = (
    "/usr/lib/openssh/sftp-server",
    "/usr/libexec/openssh/sftp-server",
    "/usr/lib/ssh/sftp-server",
    "/usr/libexec/sftp-server",
    "/usr/lib/sftp-server",
)


def wrap_sftp_server(mark: bytes) -> str:
    """The command line that starts OpenSSH's sftp-server under /bin/sh: SFTP for a
    login whose startup files print into the sftp subsystem. sh prints `<mark> sh` as
    soon as it runs, and the bare mark right before it becomes the sftp-server."""
    m = mark.decode()
    script = (
        f"printf '%s sh\\n' {m}; "
        f"for hpcfed_p in {' '.join(SFTP_SERVERS)}; do "
        f'if [ -x "$hpcfed_p" ]; then printf \'%s\\n\' {m}; exec "$hpcfed_p"; fi; done; '
        f"echo 'no sftp-server in {' '.join(SFTP_SERVERS)}' >&2; exit 127\n"
    )
    return carry(script)


@dataclass(frozen=True)
class Unframed:
    exit_status: int | None  # None: no end mark (cut off)
    stdout: bytes
    stderr: bytes
    #: What the login environment printed around our answer (stdout then stderr), if anything.
    noise: bytes


def excerpt(data: bytes) -> str:
    """A short, one-line, printable piece of what a login printed, for an error message
    or a log line; what looks like a credential (a long token, `PASSWORD=...`) is
    replaced by `[redacted]`."""
    text = data[: 4 * _EXCERPT].decode(errors="replace")
    flat = " ".join("".join(c if c.isprintable() else " " for c in text).split())
    flat = _SECRET_VALUE.sub(r"\1[redacted]", flat)
    flat = _LONG_TOKEN.sub("[redacted]", flat)
    return flat if len(flat) <= _EXCERPT else flat[: _EXCERPT - 3] + "..."


def broken(
    center: str, login: str, stdout: bytes, stderr: bytes, why: str
) -> LoginEnvironmentBroken:
    printed = stdout.strip() or stderr.strip()
    said = f"; it printed {excerpt(printed)!r}" if printed else "; it printed nothing"
    return LoginEnvironmentBroken(
        f"center {center}: the login shell of {login!r} did not run the gateway's "
        f"command ({why}): its startup files (e.g. .bashrc, .profile, .cshrc, .zshenv) or "
        f"login shell keep remote commands from running{said}",
        center=center,
    )


def split_stdout(data: bytes, mark: bytes) -> tuple[bytes, bytes, int | None, bytes] | None:
    """(before, body, exit status or None, after) of a framed stdout; None: no start mark."""
    start = data.find(mark + b"\n")
    if start < 0:
        return None
    head_end = start + len(mark) + 1
    end = data.rfind(b"\n" + mark + b" ")
    if end < head_end - 1:
        return data[:start], data[head_end:], None, b""
    line_end = data.find(b"\n", end + len(mark) + 2)
    status_text = data[end + len(mark) + 2 : line_end if line_end >= 0 else len(data)]
    if line_end < 0 or not status_text.isdigit():
        return data[:start], data[head_end:], None, b""
    return data[:start], data[head_end:end], int(status_text), data[line_end + 1 :]


def split_stderr(data: bytes, mark: bytes) -> tuple[bytes, bytes]:
    """(noise, body) of a framed stderr; all of it is the body when a mark is missing."""
    start = data.find(mark + b"\n")
    if start < 0:
        return b"", data
    body_start = start + len(mark) + 1
    end = data.rfind(b"\n" + mark + b"\n")
    if end < body_start - 1:
        return data[:start], data[body_start:]
    return data[:start] + data[end + len(mark) + 2 :], data[body_start:end]


def unframe(stdout: bytes, stderr: bytes, mark: bytes) -> Unframed | None:
    """The command's own answer out of a framed exchange; None: no start mark at all."""
    parts = split_stdout(stdout, mark)
    if parts is None:
        return None
    before, body, status, after = parts
    err_noise, err_body = split_stderr(stderr, mark)
    return Unframed(status, body, err_body, before + after + err_noise)


class StreamUnframer:
    """The body of a framed stdout that arrives in pieces: what comes before the start
    mark is dropped, and the end mark is held back until the stream ends."""

    def __init__(self, mark: bytes) -> None:
        self.mark = mark
        self._head = b""
        self._started = False
        self._tail = b""
        # The end, "\n<mark> <status>\n", with room for a stray line after it.
        self._hold = len(mark) + 8 + 4096
        self.noise = b""
        self.exit_status: int | None = None

    @property
    def started(self) -> bool:
        return self._started

    @property
    def printed(self) -> bytes:
        """What came before the start mark (all that came, while there is none)."""
        return self.noise if self._started else self._head

    def feed(self, data: bytes) -> bytes:
        """Body bytes that are certainly not part of the end mark."""
        if not self._started:
            self._head += data
            at = self._head.find(self.mark + b"\n")
            if at < 0:
                if len(self._head) > MAX_PREAMBLE:
                    raise ValueError("no start mark")
                return b""
            self.noise = self._head[:at]
            data, self._head, self._started = self._head[at + len(self.mark) + 1 :], b"", True
        self._tail += data
        if len(self._tail) <= self._hold:
            return b""
        out, self._tail = self._tail[: -self._hold], self._tail[-self._hold :]
        return out

    def finish(self) -> bytes:
        """The last body bytes once the stream has ended; sets `exit_status` if the end
        mark is there (None if it is not: the command was cut off)."""
        if not self._started:
            return b""
        end = self._tail.rfind(b"\n" + self.mark + b" ")
        if end < 0:
            return b""  # held back: without its end the stream's last bytes are not trusted
        line = self._tail[end + len(self.mark) + 2 :]
        status_text, newline, rest = line.partition(b"\n")
        if not newline or not status_text.isdigit():
            return b""
        self.exit_status = int(status_text)
        self.noise += rest
        return self._tail[:end]
