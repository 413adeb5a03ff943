"""Job users with the login environments real centers give: chatty startup files, tcsh.

- carol: bash, with a `.bashrc` and a `.profile` that print a banner on stdout and a
  notice on stderr for every shell, interactive or not (the banner's last line has no
  newline, so the next output runs on from it), as many centers' skeleton files do.
- dave: tcsh as the login shell, with a `.cshrc` that prints on stdout and stderr and
  sets a variable in csh syntax.

The gateway must run its commands under /bin/sh at these logins and set what they print
aside (adapters/transport/framing.py). At centerc the sftp subsystem is OpenSSH's external
sftp-server, which sshd starts through the login shell: their banners land in the SFTP
stream there, as at a real center (`EXTERNAL_SFTP_CENTERS`).
"""

from __future__ import annotations

import os
import pwd
from dataclasses import dataclass
from pathlib import Path

from tests.testbed.procs import TestbedError, run, which, write_if_changed

BANNER = "Welcome to Center A - quota: 80% used"
NOTICE = "Notice: /scratch is purged of files older than 30 days"
TCSH_BANNER = "Welcome to Center C (tcsh) - quota: 80% used"
#: Centers whose sshd runs /usr/lib/openssh/sftp-server (through the login shell)
#: instead of internal-sftp.
EXTERNAL_SFTP_CENTERS: tuple[str, ...] = ("centerc",)
SFTP_SERVER = "/usr/lib/openssh/sftp-server"

_HEAD = "# Written by the hpcfed testbed (python -m tests.testbed up); edits are lost.\n"

_BASHRC = f"""{_HEAD}# A center's greeting, printed for every shell, also non-interactive ones.
echo "{BANNER}"
echo "{NOTICE}" >&2
printf '%s' "Center A: 3 jobs of yours ran last week"
export HPCFED_TESTBED_BASHRC=1
case $- in *i*) ;; *) return ;; esac
"""
_PROFILE = f"""{_HEAD}echo "{BANNER} (login shell)"
echo "profile: {NOTICE}" >&2
if [ -f "$HOME/.bashrc" ]; then . "$HOME/.bashrc"; fi
"""
_CSHRC = f"""{_HEAD}echo "{TCSH_BANNER}"
/bin/sh -c 'echo "$0" >&2' "cshrc: {NOTICE}"
setenv HPCFED_TESTBED_CSHRC 1
"""


@dataclass(frozen=True)
class LoginEnvironment:
    shell: str  # the login shell, as /etc/passwd names it
    package: str  # the Debian package that installs it
    files: dict[str, str]  # startup files in the home directory: name -> content


LOGIN_ENVIRONMENTS: dict[str, LoginEnvironment] = {
    "carol": LoginEnvironment(
        shell="/bin/bash", package="bash", files={".bashrc": _BASHRC, ".profile": _PROFILE}
    ),
    "dave": LoginEnvironment(shell="/usr/bin/tcsh", package="tcsh", files={".cshrc": _CSHRC}),
}
#: What each user's startup files print on stdout, for tests that look for it.
PRINTS: dict[str, str] = {"carol": BANNER, "dave": TCSH_BANNER}


def apply(user: pwd.struct_passwd) -> pwd.struct_passwd:
    """Give `user` its login shell and startup files (if it has a login environment)."""
    env = LOGIN_ENVIRONMENTS.get(user.pw_name)
    if env is None:
        return user
    if not os.access(env.shell, os.X_OK):
        raise TestbedError(
            f"{env.shell} (login shell of {user.pw_name}) is missing: apt-get install {env.package}"
        )
    if user.pw_shell != env.shell:
        run([which("usermod"), "-s", env.shell, user.pw_name])
        user = pwd.getpwnam(user.pw_name)
    home = Path(user.pw_dir)
    for name, text in env.files.items():
        path = home / name
        write_if_changed(path, text)
        os.chown(path, user.pw_uid, user.pw_gid)
    return user
