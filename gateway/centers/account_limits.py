"""The accounting limits that apply to a user's login at a center, and what of a job
they rule out, for placement and its explanation.

A center whose scheduler enforces associations (Slurm with slurmdbd and
`AccountingStorageEnforce=associations,limits,qos`) accepts a job that its account's
group limit (`GrpTRES=cpu=2`) can never let start, and leaves it pending for ever
(`AssocGrpCpuLimit`); it refuses a login with no association outright. Placement asks
each center once per login (one remote command, cached for `LIMITS_TTL`, never per job
per tick) and leaves out the centers where the job could not run under the account it
would charge, saying which limit and why.
"""

from __future__ import annotations

import asyncio
import logging
import time

from adapters.errors import AdapterError
from adapters.limits import AccountLimits, Association, ReportsLimits, Tres
from gateway.centers.configured import Center
from gateway.errors import DomainError
from gateway.jobs.models import JobSpec

log = logging.getLogger("hpcfed.placement")

#: Associations and limits change rarely (an administrator's sacctmgr); a change counts
#: for placement within this long.
LIMITS_TTL = 300.0
#: After a failed query: ask again this soon (meanwhile no limit is assumed; the
#: scheduler still enforces its own).
ERROR_TTL = 30.0
LIMITS_TIMEOUT = 15.0


class LimitsCache:
    """Each (center, login)'s limits, fetched at most once per TTL, shared by callers."""

    def __init__(self, ttl: float = LIMITS_TTL, error_ttl: float = ERROR_TTL) -> None:
        self.ttl = ttl
        self.error_ttl = error_ttl
        self._cache: dict[tuple[str, str], tuple[float, AccountLimits | None]] = {}
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}

    async def get(self, center: Center, login: str) -> AccountLimits | None:
        """The login's limits at the center; None where it keeps no accounting or cannot
        be asked now."""
        key = (center.id, login)
        if (hit := self._fresh(key)) is not None:
            return hit[1]
        async with self._locks.setdefault(key, asyncio.Lock()):
            if (hit := self._fresh(key)) is not None:
                return hit[1]  # another caller fetched it meanwhile
            adapter = center.adapter_for(login)
            if not isinstance(adapter, ReportsLimits):
                self._cache[key] = (time.monotonic() + 1e9, None)
                return None
            try:
                async with asyncio.timeout(LIMITS_TIMEOUT):
                    limits = await adapter.account_limits()
            except (AdapterError, DomainError, TimeoutError) as exc:
                log.warning("center %s: limits of login %s unknown: %s", center.id, login, exc)
                self._cache[key] = (time.monotonic() + self.error_ttl, None)
                return None
            self._cache[key] = (time.monotonic() + self.ttl, limits)
            return limits

    def _fresh(self, key: tuple[str, str]) -> tuple[float, AccountLimits | None] | None:
        hit = self._cache.get(key)
        return hit if hit is not None and hit[0] > time.monotonic() else None


def _over(limits: Tres, name: str, asked: float, field: str, what: str, unit: str) -> list[str]:
    """'<field>: <what> allows N <unit>, the job needs M' if `asked` is over the limit."""
    if name in limits and asked > limits[name]:
        return [f"{field}: {what} allows {limits[name]:g} {unit}, the job needs {asked:g}"]
    return []


def limit_failures(center_id: str, limits: AccountLimits | None, spec: JobSpec) -> list[str]:
    """What of the job the limits that apply to the login at `center_id` rule out, each
    naming its field (the first word, as placement's other reasons do); [] if nothing."""
    if limits is None:
        return []
    login, enforced = limits.login, limits.enforced
    # Slurm: enforcing limits or QoS implies enforcing associations.
    if not enforced & {"associations", "limits", "qos"}:
        return []
    account = spec.account or limits.default_account
    if not limits.associations or account is None:
        return [
            f"center: login {login} has no association at {center_id}, so no account to "
            "charge a job to (the center adds one)"
        ]
    assoc = limits.association(account, spec.queue)
    if assoc is None:
        have = ", ".join(sorted({a.account for a in limits.associations}))
        return [
            f"account: login {login} has no association with account {account} at "
            f"{center_id} (its accounts there: {have})"
        ]
    problems = _qos_failures(center_id, limits, assoc, spec)
    if "limits" in enforced:
        problems += _association_failures(center_id, limits, assoc, spec)
    return problems


def _needs(spec: JobSpec) -> tuple[int, int, float, float]:
    """CPUs, nodes, memory (MiB, whole job) and walltime (s, 0: none asked) of the job."""
    res = spec.resources
    cpus = res.nodes * res.tasks_per_node * res.cpus_per_task
    memory = (res.memory_per_node or 0) * res.nodes
    return cpus, res.nodes, memory, res.walltime or 0


def _association_failures(
    center_id: str, limits: AccountLimits, assoc: Association, spec: JobSpec
) -> list[str]:
    cpus, nodes, memory, walltime = _needs(spec)
    where = f"account {assoc.account} at {center_id}"
    problems = []
    # Group limits: the most the account's (and its parents') running jobs may hold at
    # once. A single job above one can never start.
    for node in limits.account_chain(assoc.account):
        what = f"account {node.name} at {center_id}"
        problems += _over(node.grp_tres, "cpu", cpus, "account", what, "CPUs (GrpTRES)")
        problems += _over(node.grp_tres, "node", nodes, "account", what, "nodes (GrpTRES)")
        if memory:
            problems += _over(node.grp_tres, "mem", memory, "account", what, "MiB (GrpTRES)")
    mine = f"login {limits.login}'s association with {where}"
    problems += _over(assoc.grp_tres, "cpu", cpus, "account", mine, "CPUs (GrpTRES)")
    per_job = assoc.max_tres_per_job
    problems += _over(per_job, "cpu", cpus, "resources.cpus_per_task", where, "CPUs per job")
    problems += _over(per_job, "node", nodes, "resources.nodes", where, "nodes per job")
    if memory:
        problems += _over(per_job, "mem", memory, "resources.memory_per_node", where, "MiB per job")
    if walltime and assoc.max_wall_seconds is not None and walltime > assoc.max_wall_seconds:
        problems.append(
            f"resources.walltime: {where} allows {assoc.max_wall_seconds} s per job "
            f"(MaxWall), asked {walltime:g} s"
        )
    return problems


def _qos_failures(
    center_id: str, limits: AccountLimits, assoc: Association, spec: JobSpec
) -> list[str]:
    name = spec.qos or assoc.default_qos or ("normal" if "normal" in limits.qos else None)
    if name is None:
        return []
    if spec.qos is not None and assoc.qos and spec.qos not in assoc.qos:
        return [
            f"qos: login {limits.login} may not use QoS {spec.qos} with account "
            f"{assoc.account} at {center_id} (allowed: {', '.join(assoc.qos)})"
        ]
    qos = limits.qos.get(name)
    if qos is None:
        return [f"qos: {center_id} has no QoS {name}"] if spec.qos else []
    if "limits" not in limits.enforced and "qos" not in limits.enforced:
        return []
    cpus, nodes, _, walltime = _needs(spec)
    where = f"QoS {name} at {center_id}"
    problems = []
    if walltime and qos.max_wall_seconds is not None and walltime > qos.max_wall_seconds:
        problems.append(
            f"resources.walltime: {where} allows {qos.max_wall_seconds} s per job "
            f"(MaxWall), asked {walltime:g} s"
        )
    field = "resources.cpus_per_task"
    problems += _over(qos.max_tres_per_job, "cpu", cpus, field, where, "CPUs per job")
    problems += _over(qos.max_tres_per_user, "cpu", cpus, field, where, "CPUs per user")
    problems += _over(qos.max_tres_per_job, "node", nodes, "resources.nodes", where, "nodes")
    problems += _over(qos.grp_tres, "cpu", cpus, "qos", where, "CPUs (GrpTRES)")
    return problems
