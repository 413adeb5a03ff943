"""Bearer tokens mapped to users.

The tokens file holds only sha256 digests of tokens (``sha256-hex: user``), so
neither the file nor a log ever holds a usable token. For the embedded default,
`bootstrap_tokens` creates one token for a bootstrap user and leaves it, mode
0600, in the data dir where the CLI on the same machine finds it.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
from collections.abc import Awaitable, Callable
from pathlib import Path

import yaml
from aiohttp import web

from gateway.config import ConfigError
from gateway.errors import error_response

USER_KEY = web.RequestKey("user", str)
CLIENT_TOKEN_FILE = "client-token"  # noqa: S105 - a file name
PUBLIC_PATHS = frozenset({"/healthz"})
_HEX64 = re.compile(r"^[0-9a-f]{64}\Z")
_USER = re.compile(r"^[a-z][a-z0-9_.-]{0,63}\Z")


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class TokenAuth:
    def __init__(self, digests: dict[str, str]) -> None:
        self._digests = digests

    @classmethod
    def from_file(cls, path: Path) -> TokenAuth:
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read tokens file: {exc.strerror or exc}") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML: {exc}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: must map sha256 token digests to user names")
        for digest, user in data.items():
            if not isinstance(digest, str) or not _HEX64.match(digest):
                raise ConfigError(f"{path}: keys must be sha256 hex digests of tokens")
            if not isinstance(user, str) or not _USER.match(user):
                raise ConfigError(f"{path}: {digest[:8]}...: not a valid user name: {user!r}")
        return cls(dict(data))

    def user_for(self, token: str) -> str | None:
        digest = token_digest(token)
        for known, user in self._digests.items():
            if hmac.compare_digest(known, digest):
                return user
        return None


def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)


def bootstrap_tokens(tokens_file: Path, data_dir: Path, user: str) -> None:
    """Create the tokens file with one fresh token for `user`, if it is missing."""
    if tokens_file.exists():
        return
    token = secrets.token_urlsafe(32)
    _write_private(data_dir / CLIENT_TOKEN_FILE, token + "\n")
    _write_private(tokens_file, yaml.safe_dump({token_digest(token): user}))


def auth_middleware(auth: TokenAuth) -> Callable[..., Awaitable[web.StreamResponse]]:
    @web.middleware
    async def middleware(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if request.path in PUBLIC_PATHS:
            return await handler(request)
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        user = auth.user_for(token.strip()) if scheme.lower() == "bearer" and token else None
        if user is None:
            response = error_response(
                401,
                "unauthenticated",
                "Authorization: a valid 'Bearer <token>' header is required",
                field="Authorization",
            )
            response.headers["WWW-Authenticate"] = 'Bearer realm="hpcfed"'
            return response
        request[USER_KEY] = user
        return await handler(request)

    return middleware
