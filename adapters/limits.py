"""What a center's accounting allows one login: its associations (the accounts it may
charge, their limits) and the limits of the QoS it may use.

A scheduler-neutral shape, filled by the adapters whose center keeps accounting
(`adapters.slurm.adapter.limits` for Slurm with slurmdbd); placement reads it to leave out
centers where a job could never start under the login's account, and to say why.
An adapter offers it by implementing `ReportsLimits`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

#: TRES counts by name as the scheduler names them: "cpu", "node", "mem" (MiB), "gres/gpu".
Tres = Mapping[str, int]


@dataclass(frozen=True)
class QosLimits:
    name: str
    max_wall_seconds: int | None = None
    max_tres_per_job: Tres = field(default_factory=dict)
    max_tres_per_user: Tres = field(default_factory=dict)
    grp_tres: Tres = field(default_factory=dict)


@dataclass(frozen=True)
class Association:
    """One (account, partition) the login may submit under."""

    account: str
    partition: str | None = None  # None: every partition
    qos: tuple[str, ...] = ()
    default_qos: str | None = None
    max_tres_per_job: Tres = field(default_factory=dict)
    max_wall_seconds: int | None = None
    grp_tres: Tres = field(default_factory=dict)  # of the login's own association


@dataclass(frozen=True)
class AccountNode:
    """An account of the center's tree, with the group limit on its own association."""

    name: str
    parent: str | None
    grp_tres: Tres = field(default_factory=dict)


@dataclass(frozen=True)
class AccountLimits:
    login: str
    #: What the scheduler enforces: "associations" (unknown accounts are refused),
    #: "limits", "qos", ... An empty set: limits are recorded but not enforced.
    enforced: frozenset[str]
    default_account: str | None
    associations: tuple[Association, ...]
    accounts: Mapping[str, AccountNode]
    qos: Mapping[str, QosLimits]
    queried_at: float  # epoch seconds

    def association(self, account: str, partition: str | None) -> Association | None:
        """The association a job charging `account` in `partition` runs under: one of
        that partition's, else the account's for every partition."""
        found = [a for a in self.associations if a.account == account]
        exact = [a for a in found if partition is not None and a.partition == partition]
        general = [a for a in found if a.partition is None]
        return (exact or general or [None])[0]

    def account_chain(self, account: str) -> list[AccountNode]:
        """The account and its ancestors up to the root: each one's group limit holds."""
        chain: list[AccountNode] = []
        name: str | None = account
        while name is not None and name in self.accounts and len(chain) < 64:
            node = self.accounts[name]
            chain.append(node)
            name = node.parent
        return chain


@runtime_checkable
class ReportsLimits(Protocol):
    async def account_limits(self) -> AccountLimits | None:
        """The limits that apply to this adapter's login, from one remote command;
        None when the center keeps no accounting. Raises AdapterError subclasses
        when the center cannot be asked."""
        ...
