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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Optional

import yaml

from ..datafiles import locate
from ..errors import InputError
from ..units import parse_size
from ..vocab import KERNEL_VARIANTS
from ..workloads import all_options, default_name
from ..workloads import spec as workload_spec

IDLE_MODES = ("spin", "sleep")
#: ``threads: all`` (job file) or ``--threads all``: one touching thread per other online
#: CPU, resolved to the number on the host that runs the job (the A/B's guests differ)
ALL_OTHERS = -1


def parse_threads(value: Any) -> int:
    """A thread count, or 'all' (ALL_OTHERS)."""
    if isinstance(value, str) and value.strip().lower() == "all":
        return ALL_OTHERS
    if isinstance(value, bool) or int(value) != float(value):
        raise ValueError("expected a whole number or 'all'")
    return int(value)
#: how the sync calls are counted when tracing (tlbprobe/measure/trace.py, tlbprobe/measure/perfcount.py)
SYNC_COUNTERS = ("perf", "trace")


@dataclass
class Job:
    """Every parameter of a run. ``None`` means "choose a default for this host"."""

    workload: str = field(default_factory=default_name)  # the registry's default (workloads/)
    size: Optional[int] = None          # bytes
    repeat: int = 3
    cpu: int = 0                        # the CPU that runs the driver
    threads: int = 0                    # extra threads touching the range on other CPUs; ALL_OTHERS: one per other CPU
    idle_seconds: float = 5.0
    idle_mode: str = "spin"             # spin: driver CPU busy in user space; sleep: all idle
    trace: bool = True
    trace_buffer_kb: Optional[int] = None   # per CPU; None: sized from the job (trace.TracePlan)
    sync_counter: str = "perf"          # perf: count the sync calls in the kernel; trace: in the buffer
    latency: bool = False
    cost: bool = False                  # handler times and the initiator's wait (measure/cost.py)
    victim: bool = False                # a victim loop on every other CPU (measure/victim.py)
    kernel_variant: Optional[str] = None
    flush_mode: Optional[str] = None    # override of the detected flush mode
    #: the workload's own options (its spec's ``options``, tlbprobe/workloads/<name>/spec.py), by key
    options: Dict[str, Any] = field(default_factory=dict)
    job_file: Optional[str] = None
    description: Optional[str] = None

    def to_dict(self) -> Dict[str, Any]:
        """run.yaml ``job``: the workload's options stand beside the common ones, as
        they always have (doc/run-format.md)."""
        out: Dict[str, Any] = {}
        for f in dataclasses.fields(self):
            if f.name == "options":
                out.update(self.options)
            else:
                out[f.name] = getattr(self, f.name)
        return out

    def validate(self) -> None:
        workload_spec(self.workload)  # InputError naming the workloads there are
        if self.size is not None and self.size <= 0:
            raise InputError("--size must be positive")
        if not 1 <= self.repeat <= 1000:
            raise InputError(f"--repeat {self.repeat} is out of range (1..1000)")
        if self.cpu < 0:
            raise InputError(f"--cpu {self.cpu} is out of range (a CPU number, 0 or more)")
        if not isinstance(self.threads, int) or not (0 <= self.threads <= 4096 or self.threads == ALL_OTHERS):
            raise InputError(f"--threads {self.threads} is out of range (0..4096, or all)")
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


def resolve_common(job: Job, online_cpus: int) -> Job:
    """The common fields that depend on the host, made explicit before run.yaml is
    written: ``threads: all`` becomes the number of the other online CPUs."""
    if job.threads == ALL_OTHERS:
        return dataclasses.replace(job, threads=max(online_cpus - 1, 0))
    return job


_FIELDS = {f.name: f for f in dataclasses.fields(Job) if f.name != "options"}


def _coerce(name: str, value: Any, source: str) -> Any:
    """Check a job-file value's type; sizes may be written as '20G'."""
    if value is None:
        return None
    try:
        if name == "size":
            return parse_size(str(value))
        if name == "threads":
            return parse_threads(value)
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


def find_job_file(name: str) -> Path:
    """A job file's path: ``name`` itself when it exists, else the shipped job of that
    name (``collapse-20G`` -> workloads/collapse-20G.yaml)."""
    if not Path(name).exists() and "/" not in name:
        shipped = locate("workloads", name if name.endswith(".yaml") else f"{name}.yaml")
        if shipped.exists():
            return shipped
    return Path(name)


def shipped_jobs() -> Dict[str, str]:
    """The shipped job files by name, with their descriptions (for --help and errors)."""
    from ..datafiles import data_dir

    out: Dict[str, str] = {}
    for f in sorted(data_dir("workloads").glob("*.yaml")):
        try:
            data = yaml.safe_load(f.read_text()) or {}
        except (OSError, yaml.YAMLError):
            continue
        out[f.stem] = str(data.get("description", "")) if isinstance(data, dict) else ""
    return out


def load_job_file(path: str) -> Dict[str, Any]:
    """Parameters from a YAML job file, checked by name and type."""
    path = str(find_job_file(path))
    try:
        with open(path) as f:
            data = yaml.safe_load(f)
    except FileNotFoundError:
        raise InputError(f"{path}: no such job file; shipped jobs: {', '.join(shipped_jobs())}") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise InputError(f"{path}: not a readable YAML job file ({str(e).splitlines()[0]})") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise InputError(f"{path}: a job file is a YAML mapping of option: value")
    out = {}
    for key, value in data.items():
        name = str(key).replace("-", "_")
        if name == "job_file":
            raise InputError(f"{path}: unknown key {key!r}")
        if value is None:  # "key:" with nothing after it: as if not given, the default applies
            continue
        # the workload's own keys are checked by build_job, once it knows the workload
        out[name] = _coerce(name, value, path) if name in _FIELDS else (value, path)
    return out


def build_job(cli: Dict[str, Any], job_file: Optional[str] = None) -> Job:
    """File values, then command-line values that were given (not None), then validation.

    Keys that are not common job fields must be options of the job's workload (its
    spec's ``options``); they land in ``Job.options``, with the workload's defaults for
    those not given. An old spelling of a workload's name (its spec's aliases) becomes the
    name.
    """
    params: Dict[str, Any] = {}
    sources: Dict[str, str] = {}
    if job_file:
        for k, v in load_job_file(job_file).items():
            if isinstance(v, tuple):
                params[k], sources[k] = v
            else:
                params[k] = v
        params["job_file"] = str(Path(job_file))
    for k, v in cli.items():
        if v is not None:
            params[k], sources[k] = v, "command line"
    spec = workload_spec(params.get("workload") or default_name())  # InputError naming the workloads
    workload = params["workload"] = spec.name
    own = {o.key: o for o in spec.options}
    options: Dict[str, Any] = {}
    for key in [k for k in params if k not in _FIELDS]:
        value = params.pop(key)
        if key in own:
            options[key] = own[key].coerce(value, sources.get(key, "job"))
        elif key in all_options():
            names = all_options()[key]
            owners = (f"the {names[0]} workload" if len(names) == 1
                      else f"the {', '.join(names[:-1])} and {names[-1]} workloads")
            raise InputError(f"{sources.get(key, 'job')}: {key} is an option of {owners}, not of {workload}")
        else:
            known = sorted(set(_FIELDS) - {"job_file"} | set(own))
            raise InputError(f"{sources.get(key, 'job')}: unknown key {key!r}; known: {', '.join(known)}")
    for key, opt in own.items():
        options.setdefault(key, opt.default)
    job = Job(**params, options=options)
    job.validate()
    return job
