"""The accounting center's setup adds only what its database lacks (`up` is idempotent)."""

from __future__ import annotations

from pathlib import Path

from tests.testbed.accounting import missing_setup
from tests.testbed.centers import make_centers

CENTERD = make_centers(Path("/tmp/hpcfed-testbed"))["centerd"]
#: `sacctmgr -nP show ...` on centerd once `up` has set it up (as the testbed asks).
CLUSTERS = "centerd\n"
QOS = "normal||\nshort|00:10:00|DenyOnLimit\n"
ASSOCS = """centerd|root||||
centerd|root|root||normal|
centerd|chemistry|||normal|
centerd|chemistry|alice||normal,short|normal
centerd|chemistry|bob||normal,short|normal
centerd|physics||cpu=2|normal|
centerd|physics|alice||normal,short|normal
"""


def test_a_fresh_database_gets_the_cluster_qos_accounts_and_users() -> None:
    assert missing_setup(CENTERD, "", "normal||\n", "") == [
        "add cluster centerd",
        "add qos short MaxWall=00:10:00 Flags=DenyOnLimit",
        "add account physics Cluster=centerd Description=physics Organization=testbed "
        "GrpTRES=cpu=2",
        "add account chemistry Cluster=centerd Description=chemistry Organization=testbed",
        "add user alice Account=physics,chemistry Cluster=centerd DefaultAccount=physics "
        "QOS=normal,short DefaultQOS=normal",
        "add user bob Account=chemistry Cluster=centerd DefaultAccount=chemistry "
        "QOS=normal,short DefaultQOS=normal",
    ]


def test_a_complete_database_gets_nothing() -> None:
    assert missing_setup(CENTERD, CLUSTERS, QOS, ASSOCS) == []


def test_a_changed_limit_is_set_back_and_a_lost_association_added() -> None:
    changed = ASSOCS.replace("centerd|physics||cpu=2|", "centerd|physics||cpu=8|").replace(
        "centerd|chemistry|bob||normal,short|normal\n", ""
    )
    assert missing_setup(CENTERD, CLUSTERS, "normal||\nshort|00:30:00|\n", changed) == [
        "modify qos where name=short set MaxWall=00:10:00 Flags=DenyOnLimit",
        "modify account where name=physics cluster=centerd set GrpTRES=cpu=2",
        "add user bob Account=chemistry Cluster=centerd DefaultAccount=chemistry "
        "QOS=normal,short DefaultQOS=normal",
    ]
