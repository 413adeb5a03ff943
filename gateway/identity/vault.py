"""Secrets encrypted at rest: SSH keys of center logins and the gateway's signing keys.

Each secret is encrypted with Fernet from `cryptography` (AES-128-CBC with an
HMAC-SHA256 tag: authenticated encryption, widely used and well reviewed), under
one master key taken from an environment variable or a mode-0600 key file.

Where the encrypted entries are kept is the `VaultEntries` contract: name ->
``{"created": iso, "meta": {...}, "secret": "<fernet token>"}``, read afresh on
each call (a key the CLI adds is seen without a restart) and changed under a
lock all writers share. The embedded backend, `VaultFile`, is one JSON file::

    {"format": "hpcfed-vault", "version": 1, "entries": {name: entry, ...}}

rewritten whole and atomically under an exclusive lock on ``<path>.lock``, so
the CLI and a running gateway can both write. The signing keyring keeps its keys
in the vault (entries ``signing/<kid>``), so this contract holds them too.

Messages (`VaultError`) never hold secret material or key bytes.
"""

from __future__ import annotations

import abc
import contextlib
import fcntl
import json
import os
import re
import stat
import tempfile
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet, InvalidToken

from gateway.config_models import VaultConfig

__all__ = [
    "SIGNING_PREFIX",
    "Vault",
    "VaultEntries",
    "VaultEntry",
    "VaultError",
    "VaultFile",
    "load_master_key",
    "ssh_key_name",
]

FORMAT = "hpcfed-vault"
VERSION = 1
SIGNING_PREFIX = "signing/"
NAME_PATTERN = r"^[a-z0-9][a-z0-9_.-]*(/[a-z0-9_.-]+)*$"
_NAME_RE = re.compile(NAME_PATTERN.removesuffix("$") + r"\Z")
# The entry name is encrypted along with its secret, so that someone able to
# write the file but without the master key cannot swap two entries' secrets.
_NAME_SEPARATOR = b"\0"


class VaultError(Exception):
    """The vault or its master key cannot be used. The message is for humans and
    never contains secret material or key bytes."""


@dataclass(frozen=True)
class VaultEntry:
    """What is known about an entry without decrypting it."""

    name: str
    created: datetime
    meta: dict[str, str]


def ssh_key_name(center: str, login: str) -> str:
    """The vault entry holding the SSH private key of `login` at `center`."""
    return f"ssh/{center}/{login}"


# ---------------------------------------------------------------- files


def _make_private_dirs(directory: Path) -> None:
    """Create `directory` and missing ancestors with mode 0700 (makedirs applies
    the mode only to the leaf)."""
    missing = []
    current = directory
    while not current.exists():
        missing.append(current)
        current = current.parent
    for path in reversed(missing):
        with contextlib.suppress(FileExistsError):
            path.mkdir(mode=0o700)


def _refuse_shared_mode(path: Path, mode: int, what: str) -> None:
    if mode & 0o077:
        raise VaultError(
            f"vault: {what} {path} has mode {stat.S_IMODE(mode):04o}, readable or writable "
            f"by others; run 'chmod 600 {path}'"
        )


def _read_private(path: Path, what: str) -> bytes:
    """Read a file that must not be accessible to group or others."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as fh:
        # fstat on the open file, so the checked file is the one read.
        _refuse_shared_mode(path, os.fstat(fh.fileno()).st_mode, what)
        return fh.read()


# ---------------------------------------------------------------- master key


def _valid_fernet_key(key: bytes) -> bool:
    try:
        Fernet(key)
    except (ValueError, TypeError):
        return False
    return True


def _create_master_key(path: Path) -> bytes | None:
    """Write a fresh key to `path` (mode 0600); None when another process won the race."""
    _make_private_dirs(path.parent)
    key = Fernet.generate_key()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        return None
    with os.fdopen(fd, "wb") as fh:
        fh.write(key + b"\n")
        fh.flush()
        os.fsync(fh.fileno())
    return key


def load_master_key(
    config: VaultConfig, data_path: Callable[[str], Path], *, create: bool
) -> bytes:
    """The master key: from the environment variable if set, else from the key file.

    With `create`, a missing key file is made with a fresh key (mode 0600).
    """
    env_value = os.environ.get(config.master_key_env, "").strip()
    if env_value:
        key = env_value.encode()
        if not _valid_fernet_key(key):
            raise VaultError(
                f"vault: {config.master_key_env} is not a valid master key "
                "(a Fernet key: 32 bytes, url-safe base64)"
            )
        return key
    path = data_path(config.master_key_file)
    if not path.exists():
        if not create:
            raise VaultError(
                f"vault: no master key: set {config.master_key_env} or create {path} "
                "(a Fernet key, mode 0600)"
            )
        key_or_none = _create_master_key(path)
        if key_or_none is not None:
            return key_or_none
    try:
        key = _read_private(path, "master key file").strip()
    except OSError as exc:
        raise VaultError(f"vault: cannot read master key file {path}: {exc.strerror}") from None
    if not _valid_fernet_key(key):
        raise VaultError(
            f"vault: master key file {path} does not hold a valid master key "
            "(a Fernet key: 32 bytes, url-safe base64)"
        )
    return key


# ---------------------------------------------------------------- where entries are kept


class VaultEntries(abc.ABC):
    """The vault's entries as stored: name -> {"created", "meta", "secret"}, the
    secret already encrypted (a backend never sees a plain secret).

    Errors: VaultError when the entries cannot be read or written, its message
    naming where and never holding an entry's content."""

    @abc.abstractmethod
    def read(self) -> dict[str, dict[str, Any]]:
        """Every entry, read afresh; empty when none was ever stored."""

    @abc.abstractmethod
    def change(self) -> contextlib.AbstractContextManager[dict[str, dict[str, Any]]]:
        """The entries under a lock every writer (of any process) takes; what the
        block leaves in the dict is stored, at once and whole, if it succeeds and
        changed anything. A reader sees the entries before or after, never between."""

    @abc.abstractmethod
    def stamp(self) -> Hashable | None:
        """A value that changes whenever the entries do (None: none stored yet), a
        cheap check whether something read from them is still current."""

    def close(self) -> None:
        """Release what the backend holds (a connection); safe to call twice."""
        return None


class VaultFile(VaultEntries):
    """The entries in one JSON file, mode 0600, in a directory of mode 0700."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def read(self) -> dict[str, dict[str, Any]]:
        try:
            raw = _read_private(self.path, "vault file")
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise VaultError(f"vault: cannot read {self.path}: {exc.strerror}") from None
        try:
            data = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError):
            data = None
        if (
            not isinstance(data, dict)
            or data.get("format") != FORMAT
            or data.get("version") != VERSION
            or not isinstance(data.get("entries"), dict)
        ):
            raise VaultError(
                f"vault: {self.path} is not an hpcfed vault (format {FORMAT!r}, version {VERSION})"
            )
        return data["entries"]

    def stamp(self) -> tuple[int, int] | None:
        """(mtime_ns, size) of the file, None when absent."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return None
        return (st.st_mtime_ns, st.st_size)

    @contextlib.contextmanager
    def change(self) -> Iterator[dict[str, dict[str, Any]]]:
        _make_private_dirs(self.path.parent)
        lock_path = self.path.with_name(self.path.name + ".lock")
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            entries = self.read()
            before = json.dumps(entries, sort_keys=True)
            yield entries
            if json.dumps(entries, sort_keys=True) != before:
                self._write(entries)
        finally:
            os.close(fd)  # closing releases the lock

    def _write(self, entries: dict[str, dict[str, Any]]) -> None:
        """Replace the file atomically, so a reader sees the old or the new vault, never half."""
        data = {"format": FORMAT, "version": VERSION, "entries": entries}
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                os.fchmod(fh.fileno(), 0o600)
                json.dump(data, fh, indent=1, sort_keys=True)
                fh.write("\n")
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        self._sync_dir()

    def _sync_dir(self) -> None:
        # fsync the directory so the rename itself survives a crash.
        with contextlib.suppress(OSError):
            dir_fd = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)


# ---------------------------------------------------------------- vault


class Vault:
    """Named secrets, encrypted under the master key, kept in `entries` (a path: the
    vault file)."""

    def __init__(self, entries: VaultEntries | Path, master_key: bytes) -> None:
        self.entries = entries if isinstance(entries, VaultEntries) else VaultFile(entries)
        self._fernet = Fernet(master_key)

    @property
    def path(self) -> Path | None:
        """The vault file, where the entries are kept in one."""
        return self.entries.path if isinstance(self.entries, VaultFile) else None

    @classmethod
    def open(
        cls,
        config: VaultConfig,
        data_path: Callable[[str], Path],
        *,
        create: bool = False,
        entries: VaultEntries | None = None,
    ) -> Vault:
        """The configured vault, its entries in `entries` (default: the vault file).
        With `create`, a missing master key file is made; the vault file itself
        appears with the first `put`."""
        key = load_master_key(config, data_path, create=create)
        return cls(entries or VaultFile(data_path(config.path)), key)

    # ------------------------------------------------------------ reading

    def _load(self) -> dict[str, dict[str, Any]]:
        return self.entries.read()

    def _entry(self, name: str) -> dict[str, Any]:
        entry = self._load().get(name)
        if not isinstance(entry, dict):
            raise VaultError(f"vault: no entry {name}")
        return entry

    def get(self, name: str) -> bytes:
        """The decrypted secret `name`."""
        entry = self._entry(name)
        token = entry.get("secret")
        try:
            plain = self._fernet.decrypt(str(token).encode())
        except (InvalidToken, ValueError, TypeError):
            plain = b""
        prefix = name.encode() + _NAME_SEPARATOR
        if not plain.startswith(prefix):
            raise VaultError(
                f"vault: entry {name} cannot be decrypted with this master key "
                "(wrong key, or the entry is corrupted)"
            )
        return plain[len(prefix) :]

    def has(self, name: str) -> bool:
        return name in self._load()

    def names(self, prefix: str = "") -> list[str]:
        """Entry names beginning with `prefix`, sorted."""
        return sorted(name for name in self._load() if name.startswith(prefix))

    def info(self, name: str) -> VaultEntry:
        """When `name` was stored and its metadata; the secret stays encrypted."""
        entry = self._entry(name)
        try:
            created = datetime.fromisoformat(str(entry.get("created")))
        except ValueError:
            created = datetime.fromtimestamp(0, UTC)
        meta = entry.get("meta")
        meta = {str(k): str(v) for k, v in meta.items()} if isinstance(meta, dict) else {}
        return VaultEntry(name=name, created=created, meta=meta)

    def stamp(self) -> Hashable | None:
        """Changes whenever the entries do (None when there are none): a cheap change check."""
        return self.entries.stamp()

    # ------------------------------------------------------------ writing

    def put(self, name: str, secret: bytes, **meta: str) -> None:
        """Store `secret` as `name`, replacing any entry of that name."""
        if not _NAME_RE.match(name):
            raise ValueError(
                f"vault entry name {name!r} is not valid: use lower-case letters, digits, "
                "'_', '.', '-', and '/' between parts"
            )
        token = self._fernet.encrypt(name.encode() + _NAME_SEPARATOR + bytes(secret))
        with self.entries.change() as entries:
            entries[name] = {
                "created": datetime.now(UTC).isoformat(),
                "meta": {str(k): str(v) for k, v in meta.items()},
                "secret": token.decode(),
            }

    def remove(self, name: str) -> bool:
        """Delete `name`; False when there was no such entry."""
        with self.entries.change() as entries:
            return entries.pop(name, None) is not None
