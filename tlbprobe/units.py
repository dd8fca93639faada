"""Sizes as people type them: 512M, 20G, 1.5G, 4096 (bytes)."""

from __future__ import annotations

import re

from .errors import InputError

_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?\s*", re.IGNORECASE)

MiB = 1 << 20
GiB = 1 << 30


def parse_size(text: str) -> int:
    """Bytes from '512M', '20G', '1.5GiB' or a plain byte count, computed exactly (a float
    turned 99999999999999999999999G into garbage): a size that is not a whole number of
    bytes ('0.5', '1.1K') is refused."""
    from fractions import Fraction

    m = _SIZE.fullmatch(str(text))
    if not m or len(m.group(1)) > 40:
        raise InputError(f"bad size {text!r}: use a number with an optional K/M/G/T suffix, e.g. 512M or 20G")
    value = Fraction(m.group(1)) * _UNITS[m.group(2).upper()]
    if value.denominator != 1:
        raise InputError(f"bad size {text!r}: not a whole number of bytes")
    return int(value)


def format_size(n: int) -> str:
    """The shortest exact form: 20G, 512M, 3K or bytes."""
    for suffix in ("T", "G", "M", "K"):
        if n and n % _UNITS[suffix] == 0:
            return f"{n // _UNITS[suffix]}{suffix}"
    return str(n)
