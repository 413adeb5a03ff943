"""The gateway's token-signing keys: Ed25519, encrypted in the vault.

Keys live in the vault under ``signing/<kid>``, so they are kept wherever the
vault's entries are (`gateway.identity.vault.VaultEntries`). The newest is the
active one; rotation adds a key, and older keys keep verifying until retired, so
tokens in flight survive a rotation. Private keys are decrypted for each
signature and not kept; public keys are cached until the vault's entries change.

Whether they changed is asked of the entries' `stamp()`. A vault file answers
with a stat, so it is asked on every use (a key rotated or retired by the CLI
counts at once). Entries in a shared store answer with a round trip, so they are
asked at most every `STAMP_RECHECK` seconds; and when a token names a key not
known here, the entries are looked up for it at once (at most every
`UNKNOWN_KID_RECHECK` seconds): a key rotated through another replica or the CLI
verifies here on its first token, and a retired one stops verifying within
`STAMP_RECHECK` plus however long the entries' own stamp is kept (1 s for
PostgreSQL's). While the entries cannot be
read, the keys last read keep serving (a warning is logged once).
"""

from __future__ import annotations

import base64
import logging
import secrets
import string
import time
from collections.abc import Hashable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from gateway.identity.vault import SIGNING_PREFIX, Vault, VaultError

log = logging.getLogger("hpcfed.auth")

GATEWAY_ALGORITHM = "EdDSA"
_KID_ALPHABET = string.ascii_lowercase + string.digits  # vault names are lower case
_KID_LENGTH = 12
#: Seconds the public keys of entries in a shared store are trusted before their
#: stamp is asked again: the staleness bound of a retirement seen through a replica.
STAMP_RECHECK = 1.0
#: The least time between two stamp checks made because a token named an unknown key
#: (so that a client sending made-up key ids costs the store little).
UNKNOWN_KID_RECHECK = 0.05


@dataclass(frozen=True)
class SigningKeyInfo:
    kid: str
    created: datetime
    active: bool


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class Keyring:
    """The gateway's Ed25519 signing keys, encrypted in the vault.

    The active key is the newest. Private keys are decrypted for each signature
    and not kept; public keys are cached until the vault's entries change, asked
    every `recheck` seconds (default: 0 for a vault file, else `STAMP_RECHECK`).
    """

    def __init__(self, vault: Vault, *, recheck: float | None = None) -> None:
        self._vault = vault
        self._public: dict[str, Ed25519PublicKey] = {}
        self._public_stamp: Hashable | None = None
        self._public_loaded = False
        if recheck is None:
            recheck = 0.0 if vault.path is not None else STAMP_RECHECK
        self.recheck = recheck
        self._checked_at = float("-inf")  # monotonic time of the last stamp check
        self._looked_up_at = float("-inf")  # ... of the last look for an unknown kid
        self._unreadable = False  # the last check failed (and was logged)

    def _created(self, name: str) -> datetime:
        info = self._vault.info(name)
        try:
            return datetime.fromisoformat(info.meta["created"])
        except (KeyError, ValueError):
            return info.created

    def _newest_first(self) -> list[tuple[str, datetime]]:
        """(kid, created) of every key, newest first."""
        keys = [
            (name.removeprefix(SIGNING_PREFIX), self._created(name))
            for name in self._vault.names(SIGNING_PREFIX)
        ]
        return sorted(keys, key=lambda item: (item[1], item[0]), reverse=True)

    def _create(self) -> str:
        existing = self._newest_first()
        created = datetime.now(UTC)
        if existing and created <= existing[0][1]:
            # Keep "newest" unambiguous even if the clock is coarse or stepped back.
            created = existing[0][1] + timedelta(microseconds=1)
        kid = "".join(secrets.choice(_KID_ALPHABET) for _ in range(_KID_LENGTH))
        pem = Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        self._vault.put(
            SIGNING_PREFIX + kid, pem, created=created.isoformat(), algorithm=GATEWAY_ALGORITHM
        )
        log.info("created signing key %s", kid)
        return kid

    def ensure(self) -> str:
        """The active kid, creating the first key if there is none."""
        keys = self._newest_first()
        return keys[0][0] if keys else self._create()

    def rotate(self) -> str:
        """Create a key that becomes the active one; older keys still verify."""
        return self._create()

    def retire(self, kid: str) -> None:
        """Remove key `kid`: tokens it signed stop verifying."""
        kids = [k for k, _ in self._newest_first()]
        if kid not in kids:
            raise ValueError(f"no signing key with kid {kid!r}")
        if len(kids) == 1:
            raise ValueError(
                f"signing key {kid} is the only one; rotate first so that a key remains"
            )
        self._vault.remove(SIGNING_PREFIX + kid)
        log.info("retired signing key %s", kid)

    def keys(self) -> list[SigningKeyInfo]:
        """All signing keys, newest (the active one) first."""
        return [
            SigningKeyInfo(kid=kid, created=created, active=i == 0)
            for i, (kid, created) in enumerate(self._newest_first())
        ]

    def signing_key(self) -> tuple[str, Ed25519PrivateKey]:
        """The active kid and its private key, decrypted for this use only."""
        kid = self.ensure()
        return kid, self._private(kid)

    def _private(self, kid: str) -> Ed25519PrivateKey:
        pem = self._vault.get(SIGNING_PREFIX + kid)
        try:
            key = serialization.load_pem_private_key(pem, password=None)
        except (ValueError, TypeError):
            key = None
        if not isinstance(key, Ed25519PrivateKey):
            raise VaultError(f"vault: entry {SIGNING_PREFIX}{kid} is not an Ed25519 private key")
        return key

    def public_keys(self, *, unknown: str | None = None) -> dict[str, Ed25519PublicKey]:
        """kid -> public key; recomputed only when the vault's entries have changed,
        which is asked at most every `recheck` seconds, or sooner when `unknown` (a kid
        a token names) is not among the keys known here."""
        now = time.monotonic()
        due = now - self._checked_at >= self.recheck
        # An unknown kid is looked for among the entries themselves: a stamp may be a
        # cached one (a shared store's entries may keep theirs for a while).
        look_up = (
            unknown is not None
            and unknown not in self._public
            and self._public_loaded
            and now - self._looked_up_at >= UNKNOWN_KID_RECHECK
        )
        if due or look_up or not self._public_loaded:
            self._checked_at = now
            if look_up:
                self._looked_up_at = now
            try:
                force = look_up and self._vault.has(SIGNING_PREFIX + str(unknown))
                self._refresh(force=bool(force))
            except Exception as exc:
                if not self._public_loaded:
                    raise
                # The keys last read go on verifying while the entries cannot be read.
                if not self._unreadable:
                    log.warning("signing keys: the vault's entries cannot be read: %s", exc)
                self._unreadable = True
            else:
                if self._unreadable:
                    log.info("signing keys: the vault's entries can be read again")
                self._unreadable = False
        return dict(self._public)

    def _refresh(self, *, force: bool = False) -> None:
        stamp = self._vault.stamp()
        if self._public_loaded and stamp == self._public_stamp and not force:
            return
        public: dict[str, Ed25519PublicKey] = {}
        for kid, _ in self._newest_first():
            try:
                public[kid] = self._private(kid).public_key()
            except VaultError as exc:
                known = self._public.get(kid)
                if known is not None:
                    public[kid] = known  # read before: a kid names one key for good
                # One unreadable key must not stop tokens of the others verifying.
                log.warning("signing key %s is not usable: %s", kid, exc)
        self._public, self._public_stamp, self._public_loaded = public, stamp, True

    def jwks(self) -> dict[str, Any]:
        """The public keys as a JWKS document."""
        keys = []
        for kid, key in self.public_keys().items():
            raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
            keys.append(
                {
                    "kty": "OKP",
                    "crv": "Ed25519",
                    "x": _b64url(raw),
                    "kid": kid,
                    "alg": GATEWAY_ALGORITHM,
                    "use": "sig",
                }
            )
        return {"keys": keys}
