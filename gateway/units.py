"""Units a client writes and the gateway keeps: memory ("8GiB" -> MiB), durations
("01:30:00" -> seconds), and the one clock (`utcnow`).
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import (
    BeforeValidator,
)

_MEMORY_UNITS = {
    "": 1 / (1024 * 1024),
    "b": 1 / (1024 * 1024),
    "k": 1 / 1024,
    "kb": 1000 / (1024 * 1024),
    "kib": 1 / 1024,
    "m": 1,
    "mb": 1000 * 1000 / (1024 * 1024),
    "mib": 1,
    "g": 1024,
    "gb": 1000**3 / (1024 * 1024),
    "gib": 1024,
    "t": 1024 * 1024,
    "tb": 1000**4 / (1024 * 1024),
    "tib": 1024 * 1024,
}


#: The largest size any field takes (2 PiB), so no conversion downstream overflows.
MAX_MEMORY_MIB = 1 << 31


_MEMORY_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*$")


def parse_memory_mib(value: Any) -> int:
    """'8GiB' -> 8192; '512M' -> 512; an int is taken as MiB."""
    if isinstance(value, bool):
        raise ValueError("must be a size such as '8GiB' or '512MiB'")
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # 2.0 is the integer 2, as JSON has it
    if isinstance(value, int):
        mib = value
    else:
        match = _MEMORY_RE.match(str(value))
        unit = match.group(2).lower() if match else None
        if not match or unit not in _MEMORY_UNITS:
            raise ValueError(f"must be a size such as '8GiB' or '512MiB', got {value!r}")
        amount = float(match.group(1)) * _MEMORY_UNITS[unit]
        if not amount <= MAX_MEMORY_MIB:  # also refuses what overflows to inf
            raise ValueError(f"must be at most {MAX_MEMORY_MIB} MiB, got {value!r}")
        mib = int(-(-amount // 1))  # round up
    if mib < 1:
        raise ValueError(f"must be at least 1MiB, got {value!r}")
    if mib > MAX_MEMORY_MIB:
        raise ValueError(f"must be at most {MAX_MEMORY_MIB} MiB, got {value!r}")
    return mib


#: The longest duration any field takes: far beyond every scheduler's limit, so a
#: client's number never overflows a conversion downstream.
MAX_DURATION = 10 * 366 * 86400.0


_DURATION_SUFFIX = {"s": 1, "m": 60, "h": 3600, "d": 86400}


_CLOCK_RE = re.compile(r"^(?:(\d+)-)?(?:(\d+):)?(\d+):(\d+)$")


_SUFFIX_RE = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhd])$")


def parse_duration_seconds(value: Any) -> float:
    """'90m', '1.5h', '01:30:00', '2-00:00:00' (days), or a number of seconds."""
    if isinstance(value, bool):
        raise ValueError("must be a duration such as '90m' or '01:30:00'")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        text = str(value).strip().lower()
        if clock := _CLOCK_RE.match(text):
            days, hours, minutes, secs = (int(g) if g else 0 for g in clock.groups())
            if minutes >= 60 or secs >= 60:
                raise ValueError(f"minutes and seconds must be below 60, got {value!r}")
            seconds = float(days * 86400 + hours * 3600 + minutes * 60 + secs)
        elif suffix := _SUFFIX_RE.match(text):
            seconds = float(suffix.group(1)) * _DURATION_SUFFIX[suffix.group(2)]
        elif re.fullmatch(r"\d+(?:\.\d+)?", text):
            seconds = float(text)
        else:
            raise ValueError(f"must be a duration such as '90m' or '01:30:00', got {value!r}")
    if not math.isfinite(seconds):
        raise ValueError(f"must be a finite duration, got {value!r}")
    if seconds <= 0:
        raise ValueError(f"must be positive, got {value!r}")
    if seconds > MAX_DURATION:
        raise ValueError(f"must be at most {MAX_DURATION:.0f} s (10 years), got {value!r}")
    return seconds


MemoryMiB = Annotated[int, BeforeValidator(parse_memory_mib)]


Seconds = Annotated[float, BeforeValidator(parse_duration_seconds)]


def utcnow() -> datetime:
    return datetime.now(UTC)
