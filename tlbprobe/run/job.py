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
from typing import Any, Dict, FrozenSet, Optional, Tuple

import yaml

from ..datafiles import locate
from ..errors import InputError
from ..options import Option
from ..rundir.sections import SECTIONS
from ..units import parse_size
from ..vocab import FLUSH_MODES, KERNEL_VARIANTS
from ..workloads import all_options, default_name, names
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


def _size(value: Any) -> int:
    """A size in bytes from '20G' or a plain number (tlbprobe/units.py)."""
    return parse_size(str(value))


#: how the sync calls are counted when tracing (tlbprobe/measure/trace.py, tlbprobe/measure/perfcount.py)
SYNC_COUNTERS = ("perf", "trace")


def _workload_names() -> Tuple[str, ...]:
    return tuple(names())  # the registry (workloads/), not a list kept here


#: The options every job has, in the order `collect --help` lists them: each is a job key
#: (job files, run.yaml) and a flag; its default is the Job field's of the same name. The
#: workloads declare their own the same way (their spec's ``options``).
COMMON_OPTIONS: Tuple[Option, ...] = (
    Option("workload", "what to measure (default: collapse)", choices=_workload_names, show_choices=True,
           message="unknown workload {value!r}: choose one of {choices}"),
    Option("size", "bytes to collapse or unshare, e.g. 512M, 20G (default: up to 4G, sized to free memory)",
           kind=int, parse=_size, metavar="SIZE", low=1, message="{flag} must be positive"),
    Option("repeat", "repeats, each with its own idle window (default: 3)", kind=int, low=1, high=1000,
           metavar="N"),
    Option("cpu", "CPU that runs the driver, the process that does the operations (default: 0)", kind=int, low=0,
           metavar="C", range_text="a CPU number, 0 or more", name="driver_cpu", aliases=("--cpu",)),
    Option("threads", "extra threads reading the range from other CPUs, so the mm runs on K+1 CPUs; all: one "
                      "per other online CPU (default: 0)",
           kind=int, parse=parse_threads, expects="a thread count or 'all'", metavar="K|all", low=0, high=4096,
           allowed=(ALL_OTHERS,), range_text="0..4096, or all"),
    Option("idle_seconds", "idle control window before each repeat (default: 5; 0 disables background subtraction)",
           kind=float, low=0, high=3600, metavar="S"),
    Option("idle_mode", "spin (default): the driver CPU busy-loops in user space during the idle window, so "
                        "scheduler IPIs a busy CPU causes count as background; sleep: everything idle",
           choices=IDLE_MODES, show_choices=True, message="{flag} must be one of {choices}"),
    Option("trace", "do not attribute IPIs with tracefs (counts from /proc/interrupts only)", kind=bool,
           negate=True),
    Option("trace_buffer_kb", "trace buffer per CPU in KiB (default: sized from the job, said in the log); a buffer "
                              "that fills marks its phase's received counts lost, it does not end the run",
           kind=int, low=4, high=1 << 20, metavar="KB", range_text="4..1048576 KiB per CPU"),
    Option("sync_counter", "perf (default): count the sync calls queued in the kernel with a perf counter, exact "
                           "at any CPU count; trace: count them in the trace buffer (the older way)",
           choices=SYNC_COUNTERS, show_choices=True, message="{flag} must be one of {choices}"),
    Option("kernel_variant", "say which kernel this is, for the report (default: unknown)",
           choices=KERNEL_VARIANTS, show_choices=True, message="{flag} must be one of {choices}", name="variant",
           aliases=("--kernel-variant",)),
    Option("flush_mode", "override the detected TLB flush mode (recorded as given)",
           choices=tuple(m for m in FLUSH_MODES if m != "unknown"), show_choices=True,
           message="{key} {value!r}: choose native, pv or invlpgb"),
    # each observer's switch (--latency, --cost, --victim), declared with its section
    *(section.SWITCH for section in SECTIONS),
)
COMMON = {o.key: o for o in COMMON_OPTIONS}
#: the observers' switches by key (a job key and a flag each, not a Job field)
OBSERVER_KEYS = frozenset(section.KEY for section in SECTIONS)


@dataclass
class Job:
    """Every parameter of a run. ``None`` means "choose a default for this host".

    The fields are the common options (COMMON_OPTIONS: flag, help, checks) with their
    defaults, the workload's own options, and where the job came from. run.yaml's ``job``
    is :meth:`to_dict`, in this order.
    """

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
    #: the observers' switches (rundir/sections.py SECTIONS: latency, cost, victim) that are
    #: on; run.yaml writes each switch here by its key, true or false
    observers: FrozenSet[str] = frozenset()
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
            elif f.name == "observers":
                out.update({s.KEY: s.KEY in self.observers for s in SECTIONS})
            else:
                out[f.name] = getattr(self, f.name)
        return out

    def value(self, key: str) -> Any:
        """A common option's value by its key (an observer's switch: whether it is on)."""
        return key in self.observers if key in OBSERVER_KEYS else getattr(self, key)

    def validate(self) -> None:
        """Every common option checked by its record (range, choices), one InputError."""
        for opt in COMMON_OPTIONS:
            opt.check(self.value(opt.key))


def resolve_common(job: Job, online_cpus: int) -> Job:
    """The common fields that depend on the host, made explicit before run.yaml is
    written: ``threads: all`` becomes the number of the other online CPUs."""
    if job.threads == ALL_OTHERS:
        return dataclasses.replace(job, threads=max(online_cpus - 1, 0))
    return job


#: job-file keys that are Job fields or observer switches; description is free text,
#: job_file is set by --job
_FIELDS = {f.name for f in dataclasses.fields(Job) if f.name not in ("options", "observers")} | OBSERVER_KEYS


def _coerce(name: str, value: Any, source: str) -> Any:
    """A job-file value of a Job field, converted and checked by its option's record."""
    if name in COMMON:
        return COMMON[name].coerce(value, source)
    return None if value is None else str(value)


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
    from .. import files

    path = str(find_job_file(path))
    try:
        data = yaml.safe_load(files.read_text(path, "a job file", files.cap("job file")))
    except files.MissingFile:
        raise InputError(f"{path}: no such job file; shipped jobs: {', '.join(shipped_jobs())}") from None
    except yaml.YAMLError as e:
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
    observers = frozenset(key for key in OBSERVER_KEYS if params.pop(key, None))
    job = Job(**params, options=options, observers=observers)
    job.validate()
    return job
