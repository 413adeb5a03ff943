"""The configured centers, who each federation user is there, and their adapters.

A federation user runs at a remote center as the login its `users` map names,
with that login's SSH key from the vault. Adapters, and so pooled SSH
connections, are per (center, login): one user's session never carries
another login's commands.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime

from adapters.base import Adapter
from adapters.files.access import CenterFiles
from adapters.registry import CenterSite
from adapters.transport import openssh
from adapters.transport.keys import KeyData
from adapters.transport.openssh import OpenSSH
from adapters.transport.ssh import SSHPool, SSHTarget
from gateway.centers.config import CenterConfig
from gateway.config import LoadedConfig
from gateway.errors import DomainError
from gateway.identity.vault import Vault, VaultError, ssh_key_name
from gateway.jobs.records import JobRecord


class Center:
    def __init__(
        self,
        config: CenterConfig,
        make_adapter: Callable[[str | None], Adapter],
        make_files: Callable[[str | None], CenterFiles] | None = None,
    ) -> None:
        self.config = config
        self._make_adapter = make_adapter
        self._make_files = make_files
        self._adapters: dict[str | None, Adapter] = {}
        self._files: dict[str | None, CenterFiles] = {}
        #: Set by the health monitor while the center is down: (since, last error).
        self.down: tuple[datetime, str] | None = None

    @property
    def id(self) -> str:
        return self.config.id

    @property
    def is_local(self) -> bool:
        """Jobs run on the gateway's machine as its own user: no logins, no SSH."""
        return self.config.center_type.runs_on_gateway_host

    def public(self) -> dict[str, object]:
        return {
            "id": self.config.id,
            "name": self.config.name or self.config.id,
            "type": self.config.type,
            "region": self.config.region,
        }

    def down_reason(self) -> str | None:
        """Why the center is refused now (None while it is not down)."""
        if self.down is None:
            return None
        since, error = self.down
        return f"center {self.id} is down (since {since.isoformat()}): {error}"

    def require_available(self) -> None:
        """The circuit breaker: refused at once while the health monitor says down."""
        reason = self.down_reason()
        if reason is not None:
            raise DomainError("center_unavailable", reason, center=self.id)

    def serves(self, user: str) -> bool:
        return self.is_local or self.config.login_for(user) is not None

    def login_for(self, user: str) -> str | None:
        """The login `user` runs as here (None at the local center); refused if unmapped."""
        if self.is_local:
            return None
        login = self.config.login_for(user)
        if login is None:
            raise DomainError(
                "no_identity_at_center",
                f"center: user {user} has no login at center {self.id}; ask the center to map "
                "them in its 'users' section",
                field="center",
                center=self.id,
            )
        return login

    def service_login(self) -> str | None:
        """The login the gateway itself uses here (load queries, evaluations): the
        config's `ssh.login`, else the shared login, else the first mapped one.
        None at a local center."""
        if self.is_local:
            return None
        cfg = self.config
        if cfg.ssh is not None and cfg.ssh.login:
            return cfg.ssh.login
        if "*" in cfg.users:
            return cfg.users["*"].login
        if cfg.users:
            return next(iter(cfg.users.values())).login
        raise DomainError(
            "no_service_login",
            f"center {self.id} has no login for the gateway: set ssh.login in its config",
            field="ssh.login",
            center=self.id,
        )

    def files_as(self, login: str | None) -> CenterFiles:
        """The files of `login` here (the gateway's own use: evaluations)."""
        return self._files_of_login(None if self.is_local else login)

    def adapter_for(self, login: str | None) -> Adapter:
        key = None if self.is_local else login
        if key is None and not self.is_local:
            raise ValueError(f"center {self.id}: a remote center needs a login")
        adapter = self._adapters.get(key)
        if adapter is None:
            adapter = self._adapters[key] = self._make_adapter(key)
        return adapter

    def adapter_for_job(self, record: JobRecord) -> Adapter:
        """The adapter of the login a job was submitted as."""
        login = record.login
        if login is None and not self.is_local:
            login = self.login_for(record.owner)  # a record from before identity mapping
        return self.adapter_for(login)

    def files_for(self, user: str) -> CenterFiles:
        """`user`'s files here, as their own login (refused when unmapped)."""
        return self._files_of_login(self.login_for(user))

    def files_for_job(self, record: JobRecord) -> CenterFiles:
        """The files of the login a job runs as."""
        if record.login is None and not self.is_local:
            return self.files_for(record.owner)  # a record from before identity mapping
        return self._files_of_login(record.login)

    def _files_of_login(self, login: str | None) -> CenterFiles:
        files = self._files.get(login)
        if files is None:
            if self._make_files is None:
                raise DomainError(
                    "not_supported", f"center {self.id} offers no file access", field="center"
                )
            files = self._files[login] = self._make_files(login)
        return files

    def adapters(self) -> list[Adapter]:
        return list(self._adapters.values())

    async def close(self) -> None:
        for adapter in self._adapters.values():
            await adapter.close()


class CenterRegistry:
    def __init__(
        self,
        centers: dict[str, Center],
        default: str | None = None,
        pool: SSHPool | None = None,
        bulk: OpenSSH | None = None,
    ) -> None:
        self._centers = centers
        self.default = default
        self._pool = pool
        self._bulk = bulk

    def __iter__(self) -> Iterator[Center]:
        return iter(self._centers.values())

    @property
    def ssh_pool(self) -> SSHPool | None:
        """The SSH pool the remote centers share (None without one)."""
        return self._pool

    def __len__(self) -> int:
        return len(self._centers)

    def find(self, center_id: str) -> Center | None:
        return self._centers.get(center_id)

    def get(self, center_id: str) -> Center:
        try:
            return self._centers[center_id]
        except KeyError:
            raise DomainError(
                "unknown_center", f"center: no center named {center_id!r}", field="center"
            ) from None

    async def close(self) -> None:
        for center in self._centers.values():
            await center.close()
        if self._bulk is not None:
            await self._bulk.close()
        if self._pool is not None:
            await self._pool.close()


def vault_credential(vault: Vault, center_id: str, login: str) -> KeyData:
    """The login's SSH key, decrypted from the vault each time a connection opens."""
    name = ssh_key_name(center_id, login)

    def fetch() -> bytes:
        if not vault.has(name):
            raise LookupError(
                f"no SSH key for login {login} in the vault; add it with "
                f"'hpcfed vault add-key --center {center_id} --login {login} --key-file FILE'"
            )
        try:
            return vault.get(name)
        except VaultError as exc:
            raise LookupError(str(exc)) from None

    return KeyData(label=f"vault entry {name}", fetch=fetch)


def _target(cfg: CenterConfig, login: str, vault: Vault) -> SSHTarget:
    ssh = cfg.ssh
    assert ssh is not None  # guaranteed by CenterConfig validation
    return SSHTarget(
        center_id=cfg.id,
        host=ssh.host,
        port=ssh.port,
        login=login,
        credential=vault_credential(vault, cfg.id, login),
        host_keys=tuple(ssh.host_keys),
        connect_timeout=ssh.connect_timeout,
        command_timeout=ssh.command_timeout,
        keepalive_interval=ssh.keepalive_interval,
        max_sessions=ssh.max_sessions,
    )


def _site_factory(
    config: LoadedConfig, cfg: CenterConfig, pool: SSHPool, vault: Vault, bulk: OpenSSH | None
) -> Callable[[str | None], CenterSite]:
    """What the center's type is given to build an adapter or file access for a login."""
    kind = cfg.center_type

    def site(login: str | None) -> CenterSite:
        if kind.needs_ssh and login is None:
            raise ValueError(f"center {cfg.id}: a center reached over SSH needs a login")
        return CenterSite(
            center_id=cfg.id,
            settings=cfg.settings,
            login=login,
            target=_target(cfg, login, vault) if kind.needs_ssh and login else None,
            pool=pool if kind.needs_ssh else None,
            roots=cfg.files.roots,
            data_path=config.data_path,
            bulk=bulk if cfg.files.openssh else None,
            bulk_threshold=cfg.files.bulk_threshold << 20,
        )

    return site


def build_registry(config: LoadedConfig, vault: Vault) -> CenterRegistry:
    """Every configured center; remote centers share one SSH pool keyed by login."""
    pool = SSHPool()
    bulk = OpenSSH(config.data_dir / "run") if openssh.available() else None
    centers = {}
    for cfg in config.centers.values():
        kind, site = cfg.center_type, _site_factory(config, cfg, pool, vault, bulk)
        make_files = kind.make_files
        centers[cfg.id] = Center(
            cfg,
            lambda login, make=kind.make_adapter, site=site: make(site(login)),
            None
            if make_files is None
            else lambda login, make=make_files, site=site: make(site(login)),
        )
    return CenterRegistry(centers, default=config.gateway.default_center, pool=pool, bulk=bulk)
