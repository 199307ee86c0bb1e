"""Byte-size and rate parsing: SI by default (1 GB = 1e9 B), IEC suffixes (GiB, TiB) accepted.

Spec §5 "Units". Output helpers turn days into months (30.44 d, the mean Gregorian month) and years.
"""

from __future__ import annotations

import math
import re

from alignlab.errors import AlignlabError

DAYS_PER_MONTH = 30.44
"""Mean Gregorian month (365.25 / 12 ≈ 30.44 d), spec §5."""
DAYS_PER_YEAR = 365.25

_SI = {"": 1, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18}
_IEC = {"KI": 2**10, "MI": 2**20, "GI": 2**30, "TI": 2**40, "PI": 2**50, "EI": 2**60}
_SIZE_RE = re.compile(r"^\s*([-+]?[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*([A-Za-z]*)\s*$")
_PER = {"/s": 86400.0, "/sec": 86400.0, "/h": 24.0, "/hour": 24.0, "/day": 1.0, "/d": 1.0,
        "/month": 1.0 / DAYS_PER_MONTH, "/mo": 1.0 / DAYS_PER_MONTH}


def parse_size(text: str | float | int, field: str = "size") -> float:
    """Parse ``"2TB"``, ``"0.64 TiB"``, ``"128"`` or ``"1e9 B"`` into bytes (float).

    Suffixes: B, kB/KB, MB, GB, TB, PB, EB (SI, powers of 1000) and KiB … EiB (IEC, powers of 1024).
    A bare number is bytes. The result is validated: finite and > 0, else an error naming ``field``.
    """
    if isinstance(text, (int, float)):
        return check_positive(float(text), field)
    m = _SIZE_RE.match(str(text))
    if not m:
        raise AlignlabError(f"{field}: cannot parse {text!r} as a size; write e.g. 2TB, 0.64TiB or 1e9")
    number, unit = float(m.group(1)), m.group(2).upper()
    if unit.endswith("B"):
        unit = unit[:-1]
    if unit in _IEC:
        mult = _IEC[unit]
    elif unit in _SI:
        mult = _SI[unit]
    else:
        raise AlignlabError(f"{field}: unknown unit {m.group(2)!r}; use B, kB, MB, GB, TB, PB or KiB … PiB")
    return check_positive(number * mult, field)


def parse_rate(text: str | float | int, field: str = "rate") -> float:
    """Parse a rate into bytes/day: ``"1GB/day"``, ``"10MB/s"``, ``"5e7"`` (bare = bytes/day)."""
    if isinstance(text, (int, float)):
        return check_positive(float(text), field)
    s = str(text).strip()
    for suffix, per_day in sorted(_PER.items(), key=lambda kv: -len(kv[0])):
        if s.lower().endswith(suffix):
            return check_positive(parse_size(s[: -len(suffix)], field) * per_day, field)
    return parse_size(s, field)


def check_positive(value: float, field: str) -> float:
    """Return ``value`` if it is finite and > 0, else raise an error that names ``field``."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise AlignlabError(f"{field}: expected a number, got {value!r}")
    if not math.isfinite(value):
        raise AlignlabError(f"{field}: must be finite, got {value}")
    if value <= 0:
        raise AlignlabError(f"{field}: must be > 0, got {value}")
    return float(value)


def check_fraction(value: float, field: str) -> float:
    """Return ``value`` if it lies in (0, 1], else raise an error naming ``field``."""
    check_positive(value, field)
    if value > 1:
        raise AlignlabError(f"{field}: must lie in (0, 1], got {value}")
    return float(value)


def format_bytes(n: float, iec: bool = False) -> str:
    """Human-readable size: ``2 TB`` (SI) or ``0.64 TiB`` (IEC)."""
    base, units = (1024.0, ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"]) if iec else (
        1000.0, ["B", "kB", "MB", "GB", "TB", "PB", "EB"])
    if not math.isfinite(n):
        return str(n)
    i = 0
    while abs(n) >= base and i < len(units) - 1:
        n /= base
        i += 1
    return f"{n:.4g} {units[i]}"
