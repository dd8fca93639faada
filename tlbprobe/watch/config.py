"""The options of `tlbprobe watch`, checked once, before anything is touched.

Every refusal is one InputError line naming the option, the value and what is accepted
(tlbprobe/errors.py): a watcher that a fleet installs as a service must fail at once and
plainly on a typo in its unit file, not after an hour or with a traceback in the journal.
"""

from __future__ import annotations

import ipaddress
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Tuple

from ..errors import InputError
from ..units import MiB, parse_size

#: The default interval: one record and one read of the counters every 10 s. The
#: counters are exact whatever the interval; it sets the time resolution of the records
#: and the watcher's own cost (one cross-CPU call to each other CPU per interval).
DEFAULT_INTERVAL_S = 10.0
INTERVAL_RANGE = (0.5, 3600.0)
#: The most a watch may run for (a year): beyond it a typo, not a plan.
MAX_DURATION_S = 366 * 86400.0
#: Disk bound of a watch directory's records (--max-disk): at the default interval a
#: 2-CPU host writes ~0.1 MB of records an hour, a 256-CPU host ~1 MB (per-CPU CAL and TLB).
DEFAULT_MAX_DISK = 64 * MiB
MIN_MAX_DISK = 1 * MiB

_PART = re.compile(r"(\d+(?:\.\d+)?)([smhd])", re.I)
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


@dataclass(frozen=True)
class WatchConfig:
    """What one watch was asked to do."""

    out: Path
    interval_s: float = DEFAULT_INTERVAL_S
    #: None: until stopped (SIGTERM, SIGINT)
    duration_s: Optional[float] = None
    #: node_exporter textfile collector file (written atomically each interval)
    textfile: Optional[Path] = None
    #: (address, port) of the /metrics endpoint
    listen: Optional[Tuple[str, int]] = None
    max_disk: int = DEFAULT_MAX_DISK
    quiet: bool = False


def parse_duration(text: str, flag: str = "--duration") -> float:
    """Seconds from '90', '90s', '15m', '2h', '1d' or '1h30m'; refuses zero, negatives,
    garbage and anything beyond MAX_DURATION_S."""
    raw = str(text).strip()
    seconds: Optional[float] = None
    if re.fullmatch(r"\d+(?:\.\d+)?", raw):
        seconds = float(raw)
    elif raw and re.fullmatch(r"(?:\d+(?:\.\d+)?[smhd])+", raw, re.I):
        seconds = sum(float(n) * _SECONDS[u.lower()] for n, u in _PART.findall(raw))
    if seconds is None or not math.isfinite(seconds):
        raise InputError(f"{flag} {text!r}: not a duration; use seconds or a number with s, m, h or d "
                         f"(e.g. 90, 15m, 2h, 1h30m)")
    if seconds <= 0:
        raise InputError(f"{flag} {text!r}: must be more than zero")
    if seconds > MAX_DURATION_S:
        raise InputError(f"{flag} {text!r}: more than a year; leave --duration out to watch until stopped")
    return seconds


def parse_interval(text: str) -> float:
    """--interval: seconds (or a duration such as 1m) within INTERVAL_RANGE."""
    seconds = parse_duration(text, "--interval")
    lo, hi = INTERVAL_RANGE
    if not lo <= seconds <= hi:
        raise InputError(f"--interval {text!r}: must be between {lo:g} s and {hi:g} s")
    return seconds


def parse_listen(text: str) -> Tuple[str, int]:
    """--listen ADDRESS:PORT ('127.0.0.1:9464', '[::1]:9464')."""
    raw = str(text).strip()
    m = re.fullmatch(r"\[([0-9a-fA-F:.]+)\]:(\d+)|([^:\[\]]+):(\d+)", raw)
    if not m:
        raise InputError(f"--listen {text!r}: use ADDRESS:PORT, e.g. 127.0.0.1:9464 or [::1]:9464")
    host, port_text = (m.group(1), m.group(2)) if m.group(1) else (m.group(3), m.group(4))
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if host != "localhost":
            raise InputError(f"--listen {text!r}: {host!r} is not an IP address (or localhost)") from None
    port = int(port_text)
    if not 1 <= port <= 65535:
        raise InputError(f"--listen {text!r}: port {port} is not between 1 and 65535")
    return host, port


def parse_max_disk(text: str) -> int:
    size = parse_size(text)
    if size < MIN_MAX_DISK:
        raise InputError(f"--max-disk {text!r}: at least 1M (the records of one interval must fit many times)")
    return size


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
