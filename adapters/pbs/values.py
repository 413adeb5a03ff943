"""PBS values as pbsnodes and qstat print them: node states, durations, sizes and
counts; pure parsers the load parser (`adapters.pbs.load`) reads them with."""

from __future__ import annotations

import re

#: Node states (pbsnodes `state`, comma-separated when several) -> how a node counts.
#: Torque, PBS Pro, and the Slurm states the wrapper prints lowercased ("idle" becomes
#: "free", "drained" "offline", "allocated" "job-exclusive"/"busy").
PBS_NODE_STATES: dict[str, str] = {
    "free": "idle",
    "sleep": "idle",  # PBS Pro: powered down to save energy; woken for a job
    "cloud": "idle",  # wrapper: a cloud node not yet started
    "powered_down": "idle",  # wrapper: started again for a job
    "planned": "idle",  # wrapper: idle, a pending job planned on it
    "resume": "idle",
    "cancel_reboot": "idle",
    "job-exclusive": "allocated",  # every CPU (Torque) / the whole vnode (PBS Pro) taken
    "job-sharing": "allocated",
    "job-busy": "allocated",  # PBS Pro: every CPU assigned
    "resv-exclusive": "allocated",  # PBS Pro: the whole vnode held by a reservation
    "busy": "allocated",  # load above $max_load (wrapper: allocated)
    "reserve": "allocated",
    "time-shared": "allocated",
    "mixed": "allocated",  # wrapper: partly allocated
    "allocated": "allocated",
    "completing": "allocated",  # wrapper: a job's epilog still runs
    "reserved": "allocated",  # wrapper: in an advance reservation
    "perfctrs": "allocated",
    "power_up": "allocated",  # wrapper: booting for a job
    "powering_up": "allocated",
    "down": "down",
    "offline": "down",  # marked offline by an administrator (wrapper: drained)
    "draining": "down",  # wrapper: runs its jobs, takes no new one
    "state-unknown": "down",
    "unknown": "down",
    "stale": "down",  # PBS Pro: the server lost track of it
    "unresolvable": "down",
    "provisioning": "down",
    "wait-provisioning": "down",
    "maintenance": "down",
    "maint": "down",
    "initializing": "down",
    "fail": "down",
    "failing": "down",
    "reboot": "down",
    "reboot_issued": "down",
    "future": "down",
    "inval": "down",
    "power_down": "down",
    "powering_down": "down",
}
_STATE_SUFFIXES = "*~#%!$@^-+"  # Slurm's flags after a state name, kept by the wrapper
_SIZE_RE = re.compile(r"^(\d+)([kmgtp]?)(b|w)?$", re.IGNORECASE)


def pbs_duration(value: object) -> int | None:
    """A PBS walltime ("48:00:00", "1:00:00:00", "3600", 3600) -> seconds; None for
    none ("--", "")."""
    text = str(value).strip()
    if not text or text == "--":
        return None
    parts = text.split(":")
    if len(parts) > 4 or not all(p.isdigit() for p in parts):
        return None
    seconds = 0
    for part, unit in zip(reversed(parts), (1, 60, 3600, 86400), strict=False):
        seconds += int(part) * unit
    return seconds


def pbs_size_mib(value: object) -> int:
    """A PBS size ("8192mb", "32657912kb", "64gb", bytes) -> MiB; units are powers of 1024."""
    match = _SIZE_RE.match(str(value).strip())
    if match is None:
        return 0
    number, unit, word = match.groups()
    scale = 1024 ** "bkmgtp".index((unit or "b").lower()) * (8 if word in ("w", "W") else 1)
    return int(number) * scale // (1024 * 1024)


def truthy(value: object) -> bool:
    return str(value).strip().lower() in ("true", "yes", "y", "1", "t")


def pbs_int(value: object) -> int:
    text = str(value).strip()
    return int(text) if text.isdigit() else 0


def node_states(value: object) -> list[str]:
    """pbsnodes `state` ("down,offline", "free~") -> its states, Slurm flags dropped."""
    return [s.strip().lower().rstrip(_STATE_SUFFIXES) for s in str(value).split(",") if s.strip()]


def node_condition(states: list[str]) -> str:
    """pbsnodes states -> "idle", "allocated" or "down"; a state not known is unusable."""
    conditions = {PBS_NODE_STATES.get(s, "down") for s in states} or {"down"}
    for condition in ("down", "allocated"):
        if condition in conditions:
            return condition
    return "idle"


def state_counts(text: object) -> dict[str, int]:
    """ "Transit:0 Queued:3 Held:1 Waiting:0 Running:2 Exiting:0 Begun:0" -> counts."""
    counts = {}
    for word in str(text).split():
        name, _, number = word.partition(":")
        if number.isdigit():
            counts[name.lower()] = int(number)
    return counts
