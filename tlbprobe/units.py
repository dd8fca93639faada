"""Sizes as people type them: 512M, 20G, 1.5G, 4096 (bytes)."""

from __future__ import annotations

import re

from .errors import InputError

_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?\s*", re.IGNORECASE)

MiB = 1 << 20
GiB = 1 << 30


def parse_size(text: str) -> int:
    """Bytes from '512M', '20G', '1.5GiB' or a plain byte count."""
    m = _SIZE.fullmatch(str(text))
    if not m:
        raise InputError(f"bad size {text!r}: use a number with an optional K/M/G/T suffix, e.g. 512M or 20G")
    return int(float(m.group(1)) * _UNITS[m.group(2).upper()])


def format_size(n: int) -> str:
    """The shortest exact form: 20G, 512M, 3K or bytes."""
    for suffix in ("T", "G", "M", "K"):
        if n and n % _UNITS[suffix] == 0:
            return f"{n // _UNITS[suffix]}{suffix}"
    return str(n)
