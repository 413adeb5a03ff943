"""Accounting limits: the recorded sacctmgr answers of the testbed's accounting center
parsed, what of a job they rule out, and placement leaving such a center out, saying why."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from adapters.limits import AccountLimits
from adapters.slurm.limits import build_limits_command, parse_limits, parse_tres
from gateway.centers.account_limits import LimitsCache, limit_failures
from gateway.centers.config import CenterConfig
from gateway.centers.configured import Center
from gateway.errors import DomainError
from gateway.http.errors import status_of
from tests.unit.test_placement import KEY, Loads, partition, placer, spec

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "slurm"


def recorded(name: str, login: str) -> AccountLimits | None:
    return parse_limits((FIXTURES / name).read_text(), login, 0.0)


def alice() -> AccountLimits:
    limits = recorded("limits-centerd-alice.txt", "alice")
    assert limits is not None
    return limits


def test_the_recorded_associations_and_qos_are_read() -> None:
    limits = alice()
    assert limits.enforced == {"associations", "limits", "qos"}
    assert limits.default_account == "physics"
    assert sorted(a.account for a in limits.associations) == ["chemistry", "physics"]
    physics = limits.association("physics", None)
    assert physics is not None and physics.qos == ("normal", "short")
    assert physics.default_qos == "normal"
    assert [(n.name, dict(n.grp_tres)) for n in limits.account_chain("physics")] == [
        ("physics", {"cpu": 2}),
        ("root", {}),
    ]
    assert limits.qos["short"].max_wall_seconds == 600
    assert limits.qos["normal"].max_wall_seconds is None


def test_per_job_and_per_user_limits_are_read() -> None:
    limits = recorded("limits-centerd-alice-limited.txt", "alice")
    assert limits is not None
    chemistry = limits.association("chemistry", "normal")
    assert chemistry is not None
    assert dict(chemistry.max_tres_per_job) == {"cpu": 3, "mem": 2048}
    assert chemistry.max_wall_seconds == 3600
    assert dict(limits.qos["short"].max_tres_per_job) == {"cpu": 2}
    assert dict(limits.qos["short"].max_tres_per_user) == {"cpu": 3}


def test_a_login_without_association_has_none_and_a_center_without_accounting_no_limits() -> None:
    dora = recorded("limits-centerd-dora.txt", "dora")
    assert dora is not None and dora.associations == () and dora.default_account is None
    assert recorded("limits-centera-no-accounting.txt", "alice") is None


def test_tres_units() -> None:
    assert parse_tres("cpu=2,mem=4G,node=1,gres/gpu=2") == {
        "cpu": 2,
        "mem": 4096,
        "node": 1,
        "gres/gpu": 2,
    }
    assert parse_tres("") == {}


def test_the_login_is_quoted_in_the_command() -> None:
    assert "show user 'a b' withassoc" in build_limits_command("a b")


def test_a_job_larger_than_its_accounts_group_limit_is_ruled_out_naming_it() -> None:
    four = spec(resources={"cpus_per_task": 4})
    assert limit_failures("centerd", alice(), four) == [
        "account: account physics at centerd allows 2 CPUs (GrpTRES), the job needs 4"
    ]
    assert limit_failures("centerd", alice(), spec(resources={"cpus_per_task": 2})) == []
    # The other account has no such limit.
    assert (
        limit_failures("centerd", alice(), four.model_copy(update={"account": "chemistry"})) == []
    )


def test_account_qos_and_walltime_failures_name_their_fields() -> None:
    limits = alice()
    (unknown,) = limit_failures("centerd", limits, spec(account="biology"))
    assert unknown.startswith("account: login alice has no association with account biology")
    (qos,) = limit_failures("centerd", limits, spec(qos="long"))
    assert (
        qos == "qos: login alice may not use QoS long with account physics at centerd "
        "(allowed: normal, short)"
    )
    (wall,) = limit_failures("centerd", limits, spec(qos="short", resources={"walltime": "20m"}))
    assert (
        wall == "resources.walltime: QoS short at centerd allows 600 s per job (MaxWall), "
        "asked 1200 s"
    )
    limited = recorded("limits-centerd-alice-limited.txt", "alice")
    big = spec(account="chemistry", qos="short", resources={"cpus_per_task": 4})
    assert [p.split(":", 1)[0] for p in limit_failures("centerd", limited, big)] == [
        "resources.cpus_per_task",  # the QoS: 2 per job
        "resources.cpus_per_task",  # the QoS: 3 per user
        "resources.cpus_per_task",  # the association: 3 per job
    ]


def test_a_login_without_association_is_ruled_out_naming_the_center() -> None:
    dora = recorded("limits-centerd-dora.txt", "dora")
    (problem,) = limit_failures("centerd", dora, spec())
    assert problem.startswith("center: login dora has no association at centerd")


class LimitsAdapter:
    """An adapter that reports recorded limits, counting how often it is asked."""

    def __init__(self, limits: AccountLimits | None) -> None:
        self.limits = limits
        self.asked = 0

    async def account_limits(self) -> AccountLimits | None:
        self.asked += 1
        return self.limits


def accounting_center(cid: str, adapter: LimitsAdapter, **config: Any) -> Center:
    cfg = CenterConfig.model_validate(
        {
            "id": cid,
            "type": "slurm",
            "ssh": {"host": "h", "login": "svc", "host_keys": [KEY]},
            "users": {"alice": {"login": "alice"}},
            **config,
        }
    )
    return Center(cfg, lambda _login: adapter)  # type: ignore[arg-type,return-value]


def plain_center(cid: str) -> Center:
    cfg = CenterConfig.model_validate(
        {
            "id": cid,
            "type": "slurm",
            "ssh": {"host": "h", "login": "svc", "host_keys": [KEY]},
            "users": {"alice": {"login": "alice"}},
        }
    )
    return Center(cfg, lambda _login: None)  # type: ignore[arg-type,return-value]


async def test_auto_leaves_out_a_center_whose_account_limit_the_job_exceeds() -> None:
    adapter = LimitsAdapter(alice())
    centerd = accounting_center("centerd", adapter)
    # centerd is idle and would win on wait alone; centera is busy.
    busy = partition(cores_idle=0, cores_allocated=8, jobs_queued=3, estimated_wait_seconds=600)
    p = placer(
        [plain_center("centera"), centerd],
        Loads({"centera": [busy], "centerd": [partition()]}),
    )
    decision = await p.place("alice", spec(resources={"cpus_per_task": 4}))
    assert decision.chosen == "centera"
    assert (
        "centerd: account: account physics at centerd allows 2 CPUs (GrpTRES), the job needs 4"
        in decision.explanation
    )
    refused = {c.center: c.refused for c in decision.candidates if not c.eligible}
    assert refused == {
        "centerd": ["account: account physics at centerd allows 2 CPUs (GrpTRES), the job needs 4"]
    }
    # A job within the limit goes to the idle center; the limits were asked once.
    small = await p.place("alice", spec(resources={"cpus_per_task": 2}))
    assert small.chosen == "centerd"
    assert adapter.asked == 1


async def test_auto_with_only_that_center_is_refused_naming_the_field() -> None:
    p = placer(
        [accounting_center("centerd", LimitsAdapter(alice()))], Loads({"centerd": [partition()]})
    )
    with pytest.raises(DomainError) as err:
        await p.place("alice", spec(resources={"cpus_per_task": 4}))
    assert (status_of(err.value), err.value.field) == (422, "account")
    assert "allows 2 CPUs (GrpTRES), the job needs 4" in err.value.message


async def test_limits_are_cached_per_login_for_their_ttl() -> None:
    adapter = LimitsAdapter(alice())
    centerd = accounting_center("centerd", adapter)
    cache = LimitsCache(ttl=0.0)
    await cache.get(centerd, "alice")
    await cache.get(centerd, "alice")
    assert adapter.asked == 2  # no TTL: asked each time
    cache = LimitsCache()
    for _ in range(3):
        assert await cache.get(centerd, "alice") is adapter.limits
    assert adapter.asked == 3
