"""The job: what a run measures, from a YAML job file merged with command-line flags.

A job file (workloads/*.yaml) uses the same names as the long options, e.g.::

    workload: collapse
    size: 4G
    repeat: 5

Flags given on the command line override the file. The effective job, with every
parameter explicit, is written into the run's run.yaml so a reviewer can rerun it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional

import yaml

from .datafiles import locate
from .errors import InputError
from .units import parse_size
from .vocab import KERNEL_VARIANTS, WORKLOADS

IDLE_MODES = ("spin", "sleep")
#: how the sync calls are counted when tracing (tlbprobe/trace.py, tlbprobe/perfcount.py)
SYNC_COUNTERS = ("perf", "trace")


@dataclass
class Job:
    """Every parameter of a run. ``None`` means "choose a default for this host"."""

    workload: str = "collapse"
    size: Optional[int] = None          # bytes
    repeat: int = 3
    cpu: int = 0                        # the CPU that runs the driver
    threads: int = 0                    # extra threads touching the range on other CPUs
    idle_seconds: float = 5.0
    idle_mode: str = "spin"             # spin: driver CPU busy in user space; sleep: all idle
    trace: bool = True
    trace_buffer_kb: Optional[int] = None   # per CPU; None: sized from the job (trace.TracePlan)
    sync_counter: str = "perf"          # perf: count the sync calls in the kernel; trace: in the buffer
    latency: bool = False
    kernel_variant: Optional[str] = None
    flush_mode: Optional[str] = None    # override of the detected flush mode
    # hugetlb-unshare
    operation: str = "munmap"
    sharers: int = 2
    cycles: Optional[int] = None
    control: bool = False
    job_file: Optional[str] = None
    description: Optional[str] = None

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    def validate(self) -> None:
        if self.workload not in WORKLOADS:
            raise InputError(f"unknown workload {self.workload!r}: choose one of {', '.join(WORKLOADS)}")
        if self.size is not None and self.size <= 0:
            raise InputError("--size must be positive")
        if not 1 <= self.repeat <= 1000:
            raise InputError(f"--repeat {self.repeat} is out of range (1..1000)")
        if self.cpu < 0:
            raise InputError(f"--cpu {self.cpu} is out of range (a CPU number, 0 or more)")
        if not 0 <= self.threads <= 4096:
            raise InputError(f"--threads {self.threads} is out of range (0..4096)")
        if not 0 <= self.idle_seconds <= 3600:
            raise InputError(f"--idle-seconds {self.idle_seconds} is out of range (0..3600)")
        if self.trace_buffer_kb is not None and not 4 <= self.trace_buffer_kb <= 1 << 20:
            raise InputError(f"--trace-buffer-kb {self.trace_buffer_kb} is out of range (4..1048576 KiB per CPU)")
        if self.sync_counter not in SYNC_COUNTERS:
            raise InputError(f"--sync-counter must be one of {', '.join(SYNC_COUNTERS)}")
        if self.idle_mode not in IDLE_MODES:
            raise InputError(f"--idle-mode must be one of {', '.join(IDLE_MODES)}")
        if self.flush_mode not in (None, "native", "pv", "invlpgb"):
            raise InputError(f"flush_mode {self.flush_mode!r}: choose native, pv or invlpgb")
        if self.kernel_variant not in (None,) + KERNEL_VARIANTS:
            raise InputError(f"--kernel-variant must be one of {', '.join(KERNEL_VARIANTS)}")
        if self.sharers < 2 or self.sharers > 64:
            raise InputError(f"--sharers {self.sharers} is out of range (2..64)")
        if self.cycles is not None and not 1 <= self.cycles <= 100000:
            raise InputError(f"--cycles {self.cycles} is out of range (1..100000)")


_FIELDS = {f.name: f for f in dataclasses.fields(Job)}


def _coerce(name: str, value: Any, source: str) -> Any:
    """Check a job-file value's type; sizes may be written as '20G'."""
    if value is None:
        return None
    try:
        if name == "size":
            return parse_size(str(value))
        kind = _FIELDS[name].type
        if "bool" in str(kind):
            if not isinstance(value, bool):
                raise ValueError("expected true or false")
            return value
        if "int" in str(kind):
            if isinstance(value, bool) or int(value) != float(value):
                raise ValueError("expected a whole number")
            return int(value)
        if "float" in str(kind):
            return float(value)
        return str(value)
    except (TypeError, ValueError, OverflowError, InputError) as e:
        raise InputError(f"{source}: {name}: {value!r} is not valid ({e})") from None


def load_job_file(path: str) -> Dict[str, Any]:
    """Parameters from a YAML job file, checked by name and type."""
    if not Path(path).exists():  # a name of a shipped job file: --job collapse-20G
        shipped = locate("workloads", path if path.endswith(".yaml") else f"{path}.yaml")
        path = str(shipped) if shipped.exists() and "/" not in path else path
    try:
        with open(path) as f:
            data = yaml.safe_load(f)
    except FileNotFoundError:
        raise InputError(f"{path}: no such job file (see workloads/ for examples)") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise InputError(f"{path}: not a readable YAML job file ({str(e).splitlines()[0]})") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise InputError(f"{path}: a job file is a YAML mapping of option: value")
    out = {}
    for key, value in data.items():
        name = str(key).replace("-", "_")
        if name not in _FIELDS or name == "job_file":
            raise InputError(f"{path}: unknown key {key!r}; known: {', '.join(sorted(_FIELDS))}")
        out[name] = _coerce(name, value, path)
    return out


def build_job(cli: Dict[str, Any], job_file: Optional[str] = None) -> Job:
    """File values, then command-line values that were given (not None), then validation."""
    params: Dict[str, Any] = {}
    if job_file:
        params.update(load_job_file(job_file))
        params["job_file"] = str(Path(job_file))
    params.update({k: v for k, v in cli.items() if v is not None and k in _FIELDS})
    job = Job(**params)
    job.validate()
    return job
