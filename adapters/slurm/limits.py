"""A Slurm login's associations and QoS limits from one remote command (pure builder
and parser; `SlurmAdapter.account_limits` runs them).

The command prints `scontrol show config`'s ClusterName, AccountingStorageType and
AccountingStorageEnforce lines; at a cluster with slurmdbd it then prints, each part
after a `SEPARATOR` line:
- `show user <login> withassoc`: the login's default account and one row per
  association (account, partition, limits, QoS);
- `show assoc user=`: the accounts' own associations (parent, group limits), so the
  limits of an account and of its ancestors are known;
- `show qos`: every QoS's limits.
Each sacctmgr costs ~0.3 s here (a round trip to slurmdbd): the caller caches the answer.
"""

from __future__ import annotations

import re

from adapters.batch.markers import SEPARATOR
from adapters.limits import AccountLimits, AccountNode, Association, QosLimits
from adapters.slurm.load import slurm_duration
from adapters.transport.framing import quote

USER_FIELDS = "User,DefaultAccount,Account,Partition,GrpTRES,MaxTRES,MaxWall,QOS,DefaultQOS"
ACCOUNT_FIELDS = "Account,ParentName,GrpTRES"
QOS_FIELDS = "Name,MaxWall,MaxTRES,MaxTRESPU,GrpTRES"
_CONFIG_KEYS = ("ClusterName", "AccountingStorageType", "AccountingStorageEnforce")
_TRES_RE = re.compile(r"^([a-z]+(?:/[A-Za-z0-9_:.-]+)?)=(\d+)([KMGTP]?)$")
_MIB = {"": 1, "K": 1 / 1024, "M": 1, "G": 1024, "T": 1024**2, "P": 1024**3}


def build_limits_command(login: str) -> str:
    """The one command; `login` comes from the center's config, quoted all the same."""
    keys = "|".join(_CONFIG_KEYS)
    user = quote(login)
    return (
        "conf=$(scontrol show config) || exit 1; "
        f"printf '%s\\n' \"$conf\" | grep -E '^({keys}) '; "
        "c=$(printf '%s\\n' \"$conf\" | sed -n 's/^ClusterName *= *//p'); "
        'case "$conf" in *accounting_storage/slurmdbd*) ;; *) exit 0 ;; esac; '
        f"echo {SEPARATOR} && "
        f'sacctmgr -nP show user {user} withassoc where cluster="$c" format={USER_FIELDS} && '
        f"echo {SEPARATOR} && "
        f'sacctmgr -nP show assoc where cluster="$c" user= format={ACCOUNT_FIELDS} && '
        f"echo {SEPARATOR} && "
        f"sacctmgr -nP show qos format={QOS_FIELDS}"
    )


def parse_tres(text: str) -> dict[str, int]:
    """ "cpu=2,mem=4G,node=1,gres/gpu=2" -> counts, memory in MiB; unreadable items are
    left out (a limit not understood is not enforced here; the scheduler still does)."""
    found: dict[str, int] = {}
    for item in text.split(","):
        match = _TRES_RE.match(item.strip())
        if match is None:
            continue
        name, number, unit = match.groups()
        value = int(number)
        if name == "mem":
            value = int(value * _MIB[unit or "M"])
        elif unit:
            continue
        found[name] = value
    return found


def _wall(text: str) -> int | None:
    try:
        return slurm_duration(text)
    except ValueError:
        return None


def _sections(text: str) -> tuple[dict[str, str], list[list[list[str]]]]:
    """The config lines, then the rows of each sacctmgr part."""
    config_text, *parts = text.split(SEPARATOR + "\n")
    config: dict[str, str] = {}
    for line in config_text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip() in _CONFIG_KEYS:
            config[key.strip()] = value.strip()
    rows = [[line.split("|") for line in part.splitlines() if line.strip()] for part in parts]
    return config, rows + [[]] * (3 - len(rows))


def parse_limits(text: str, login: str, queried_at: float) -> AccountLimits | None:
    """The command's output -> the login's limits; None at a cluster without slurmdbd."""
    config, sections = _sections(text)
    if "slurmdbd" not in config.get("AccountingStorageType", ""):
        return None
    enforce = config.get("AccountingStorageEnforce", "none")
    enforced = frozenset(w for w in enforce.split(",") if w and w != "none")
    default_account = None
    associations = []
    users, account_rows, qos_rows = sections[:3]
    for row in users:
        if len(row) < 9 or row[0] != login:
            continue
        _, default, account, partition, grp, max_tres, max_wall, qos, def_qos = row[:9]
        default_account = default or default_account
        associations.append(
            Association(
                account=account,
                partition=partition or None,
                qos=tuple(q for q in qos.split(",") if q),
                default_qos=def_qos or None,
                max_tres_per_job=parse_tres(max_tres),
                max_wall_seconds=_wall(max_wall),
                grp_tres=parse_tres(grp),
            )
        )
    accounts = {}
    for row in account_rows:
        if len(row) >= 3 and row[0]:
            accounts[row[0]] = AccountNode(row[0], row[1] or None, parse_tres(row[2]))
    qos = {}
    for row in qos_rows:
        if len(row) >= 5 and row[0]:
            qos[row[0]] = QosLimits(
                name=row[0],
                max_wall_seconds=_wall(row[1]),
                max_tres_per_job=parse_tres(row[2]),
                max_tres_per_user=parse_tres(row[3]),
                grp_tres=parse_tres(row[4]),
            )
    return AccountLimits(
        login=login,
        enforced=enforced,
        default_account=default_account,
        associations=tuple(associations),
        accounts=accounts,
        qos=qos,
        queried_at=queried_at,
    )
