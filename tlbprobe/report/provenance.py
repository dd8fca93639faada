"""Where a run was measured and how to make it again, from what its run.yaml records.

A reviewer reads a table and asks first where it came from: a bare-metal host, a KVM,
Xen or Hyper-V guest (whose flush mode decides what the patch can save), or a QEMU guest
that `tlbprobe repro` or `tlbprobe qemu collect` started (under TCG, vCPUs taking turns
on the host's threads); which kernel, with which patches; and which command makes the
run again. Every renderer takes these facts from the one :class:`Provenance` built
here, so the formats cannot tell different stories.

What run.yaml does not record is said as "not recorded" (or "unknown") with the reason,
and a warning; nothing is guessed. Two facts of older guest runs are *inferred*, and
said to be: that repro started the guest (its share directory OUT/<variant>/.<job>.guest-*
is the layout workflows/repro.py writes) and the repro command from the guest's facts.
The keys are documented in doc/run-format.md (run.yaml ``host``, ``qemu``).
"""

from __future__ import annotations

import re
import shlex
from dataclasses import asdict, dataclass, field
from pathlib import PurePath
from typing import Any, Dict, List, Optional, Sequence, Tuple

from ..rundir.reader import Run

#: run.yaml host.hypervisor (measure/host.py detect_hypervisor: /sys/hypervisor/type, or the
#: kernel's "Hypervisor detected: X" lowered) -> (environment id, how the report names it)
HYPERVISORS = {"kvm": ("kvm", "KVM"), "xen": ("xen", "Xen"), "hyperv": ("hyperv", "Hyper-V"),
               "microsoft": ("hyperv", "Hyper-V"), "vmware": ("vmware", "VMware")}
#: the share directory of a guest in its init= path (vm/collect.py run_jobs)
_SHARE = re.compile(r"init=(\S*/)?([^/\s]+)/\.([^/\s]+)\.guest-\d+/init\.sh")
VARIANTS = ("baseline", "patched")


@dataclass(frozen=True)
class Patch:
    file: str
    subject: Optional[str]


@dataclass(frozen=True)
class Series:
    """The patch series a kernel carries (run.yaml qemu.kernel_build.series)."""

    key: Optional[str]
    patches: Tuple[Patch, ...]


@dataclass(frozen=True)
class StartedBy:
    command: str                 # "repro" | "qemu collect"
    argv: Tuple[str, ...]        # as recorded; () when inferred
    inferred: Optional[str] = None  # how it was inferred, for a run that does not record it


@dataclass(frozen=True)
class Provenance:
    environment: str            # bare-metal | kvm-guest | xen-guest | hyperv-guest | guest | qemu-tcg | qemu-kvm | unknown
    cpus: int                   # online CPUs the run measured (a guest's vCPUs)
    cpu_model: Optional[str]
    flush_mode: Optional[str]   # as run.yaml host.flush_mode records it
    hypervisor: Optional[str]
    vcpus: Optional[int] = None
    tcg_thread: Optional[str] = None   # single | multi | None (not recorded / not TCG)
    host_name: Optional[str] = None    # the machine QEMU ran on
    host_cpus: Optional[int] = None
    host_cpu_model: Optional[str] = None
    started_by: Optional[StartedBy] = None
    kernel_release: str = "unknown"
    kernel_key: Optional[str] = None
    series: Optional[Series] = None
    reproduce: Optional[str] = None
    reproduce_note: str = ""
    warnings: Tuple[str, ...] = ()
    unknown: Dict[str, str] = field(default_factory=dict)  # fact -> why it is not known

    @property
    def guest_of_qemu(self) -> bool:
        return self.environment.startswith("qemu-")

    def where(self, plural: bool = False) -> str:
        """One line for people: 'QEMU TCG guest started by tlbprobe repro, 64 vCPUs, ...'."""
        s = "s" if plural else ""
        if self.guest_of_qemu:
            accel = "TCG" if self.environment == "qemu-tcg" else "KVM"
            by = self.started_by
            who = (f" started by tlbprobe {by.command}" + (" (inferred)" if by.inferred else "")) if by else \
                " (which command started it: not recorded)"
            parts = [f"QEMU {accel} guest{s}{who}", f"{self.vcpus or self.cpus} vCPUs"]
            if self.environment == "qemu-tcg":
                parts.append(f"{self.tcg_thread}-threaded TCG" if self.tcg_thread else "TCG threading not recorded")
            else:
                parts.append(f"flush {self.flush_mode or 'unknown'}")
            if self.host_cpus:
                model = f" ({self.host_cpu_model})" if self.host_cpu_model else ""
                parts.append(f"on a host of {self.host_cpus} CPUs{model}")
            else:
                parts.append("host's cores not recorded")
            return ", ".join(parts)
        model = self.cpu_model or "CPU model not recorded"
        if self.environment == "bare-metal":
            return f"bare-metal host{s}, {model}, {self.cpus} CPUs"
        if self.environment.endswith("-guest") or (self.environment == "guest" and self.hypervisor
                                                   and self.hypervisor != "unknown"):
            hv = HYPERVISORS.get(self.hypervisor or "", (None, self.hypervisor))[1]
            return f"{hv} guest{s}, {model}, {self.cpus} vCPUs, flush {self.flush_mode or 'unknown'}"
        if self.environment == "guest":
            return f"guest{s} of an unknown hypervisor, {model}, {self.cpus} vCPUs, flush {self.flush_mode or 'unknown'}"
        return f"unknown machine ({self.unknown.get('environment', 'not recorded')}), {self.cpus} CPUs"

    def kernel(self, variant: Optional[str]) -> str:
        """'6.12.117 patched, kernel 695f0115740beccf, series aaaa: 1 patch' and the like."""
        out = f"{self.kernel_release} {variant or '(variant unknown)'}"
        if self.kernel_key:
            out += f", kernel {self.kernel_key}"
        if self.series is None:
            if self.guest_of_qemu or self.kernel_key:
                out += f", series not recorded ({self.unknown.get('series', 'not recorded')})"
        elif not self.series.patches:
            out += ", no patches"
        else:
            n = len(self.series.patches)
            out += f", series {self.series.key}: {n} patch{'es' if n != 1 else ''}"
        return out

    def patch_lines(self) -> List[str]:
        """The series' subjects, one a line ('1/2 mm/mmu_gather: ...')."""
        if not self.series:
            return []
        n = len(self.series.patches)
        return [f"{i}/{n} {p.subject or p.file}" for i, p in enumerate(self.series.patches, 1)]

    def to_dict(self) -> Dict[str, Any]:
        d = asdict(self)
        d["where"] = self.where()
        return d


def provenance(run: Run) -> Provenance:
    """The run's provenance, from run.yaml (``host``, ``qemu``, ``command``)."""
    host, q = run.host, run.run_yaml.get("qemu")
    q = q if isinstance(q, dict) else None
    warnings: List[str] = []
    unknown: Dict[str, str] = {}
    hv = host.get("hypervisor") if isinstance(host.get("hypervisor"), str) else None
    flags = host.get("cpu_flags") if isinstance(host.get("cpu_flags"), dict) else {}
    fm = host.get("flush_mode") if isinstance(host.get("flush_mode"), str) else None
    if q is not None:
        env = "qemu-tcg" if q.get("accel") == "tcg" else "qemu-kvm" if q.get("accel") == "kvm" else "unknown"
        if env == "unknown":
            unknown["environment"] = f"run.yaml qemu.accel is {q.get('accel')!r}"
    elif not host:
        env = "unknown"
        unknown["environment"] = "run.yaml records no host facts (damaged or truncated)"
    elif hv and hv != "unknown":
        env = f"{HYPERVISORS[hv][0]}-guest" if hv in HYPERVISORS else "guest"
    elif hv == "unknown" or flags.get("hypervisor") is True:
        env = "guest"
    elif flags.get("hypervisor") is False:
        env = "bare-metal"  # the CPU's hypervisor bit is clear and no hypervisor was found
    else:
        env = "unknown"
        unknown["environment"] = "run.yaml records neither a hypervisor nor the CPU's hypervisor flag"
    if env == "unknown":
        warnings.append(f"where this run was measured is unknown: {unknown['environment']}")
    p: Dict[str, Any] = dict(environment=env, cpus=_online(run), cpu_model=host.get("cpu_model") or None,
                             flush_mode=fm, hypervisor=hv, kernel_release=run.kernel_release)
    if q is not None:
        p.update(_guest_facts(run, q, warnings, unknown))
    else:
        p["reproduce"], p["reproduce_note"] = _collect_line(run)
    if p.get("reproduce") is None and not p.get("reproduce_note"):
        p["reproduce_note"] = "run.yaml records no command"
    return Provenance(**p, warnings=tuple(warnings), unknown=unknown)


def _online(run: Run) -> int:
    try:
        return run.online_cpus
    except (KeyError, TypeError, ValueError):
        return 0


def _guest_facts(run: Run, q: Dict[str, Any], warnings: List[str], unknown: Dict[str, str]) -> Dict[str, Any]:
    out: Dict[str, Any] = {"vcpus": q.get("smp") if isinstance(q.get("smp"), int) else None}
    thread = q.get("tcg_thread")
    if thread in ("single", "multi"):
        out["tcg_thread"] = thread
    elif q.get("accel") == "tcg":
        m = re.search(r"thread=(single|multi)", " ".join(str(w) for w in q.get("cmdline") or []))
        out["tcg_thread"] = m.group(1) if m else None
        if not m:
            unknown["tcg_thread"] = "run.yaml predates qemu.tcg_thread and its QEMU command line sets none"
    h = q.get("host") if isinstance(q.get("host"), dict) else None
    if h and isinstance(h.get("cpus"), int):
        out.update(host_name=h.get("hostname"), host_cpus=h["cpus"], host_cpu_model=h.get("cpu_model"))
    else:
        unknown["host_cpus"] = "run.yaml predates qemu.host"
        warnings.append("the cores of the host that ran QEMU are not recorded (run.yaml predates qemu.host): "
                        "how many host threads the vCPUs shared is unknown")
    key = _kernel_key(q.get("kernel"))
    kb = q.get("kernel_build") if isinstance(q.get("kernel_build"), dict) else None
    if kb:
        key = str(kb.get("key") or key or "") or None
        s = kb.get("series") if isinstance(kb.get("series"), dict) else {}
        patches = tuple(Patch(str(x.get("file")), x.get("subject")) for x in s.get("patches") or []
                        if isinstance(x, dict))
        out["series"] = Series(s.get("key"), patches)
    else:
        why = ("the kernel did not come from tlbprobe's kernel cache" if "kernel_build" in q
               else "run.yaml predates qemu.kernel_build")
        unknown["series"] = why
        warnings.append(f"the kernel's patch series is not recorded ({why}): the kernel is known by "
                        f"{'its cache key' if key else 'its path'} only")
    out["kernel_key"] = key
    by = q.get("started_by")
    if isinstance(by, dict) and by.get("command"):
        out["started_by"] = StartedBy(str(by["command"]), tuple(str(w) for w in by.get("argv") or []))
    else:
        out["started_by"] = _infer_repro(run, q)
        if out["started_by"] is None:
            unknown["started_by"] = "run.yaml predates qemu.started_by"
            warnings.append("which command started the guest is not recorded (run.yaml predates qemu.started_by)")
    out["reproduce"], out["reproduce_note"] = _guest_line(run, q, out["started_by"], out.get("tcg_thread"))
    return out


def _kernel_key(path: Any) -> Optional[str]:
    """The kernel cache's key from a bzImage path (.../kernels/<key>/bzImage)."""
    if not isinstance(path, str):
        return None
    parts = PurePath(path).parts
    return parts[-2] if len(parts) >= 3 and parts[-1] == "bzImage" and parts[-3] == "kernels" else None


def _infer_repro(run: Run, q: Dict[str, Any]) -> Optional[StartedBy]:
    """repro's runs live at OUT/<variant>/<job>, their guests' shares at OUT/<variant>/.<job>.guest-*:
    an older run without qemu.started_by is recognised by that init= path."""
    text = " ".join([str(run.host.get("cmdline") or "")] + [str(w) for w in q.get("cmdline") or []])
    m = _SHARE.search(text)
    if m and m.group(2) in VARIANTS and m.group(2) == run.job.get("kernel_variant"):
        return StartedBy("repro", (), inferred=f"its guest's share {m.group(2)}/.{m.group(3)}.guest-* is "
                                               f"repro's layout")
    return None


def job_word(path: str) -> str:
    """A job file as a person names it: its job name for one of workloads/, else its file name."""
    p = PurePath(path)
    if p.suffix in (".yaml", ".yml") and p.parent.name == "workloads":
        return p.stem
    return p.name if p.is_absolute() else path


def clean_words(words: Sequence[str]) -> List[str]:
    """A recorded command as a reviewer types it: `tlbprobe` first, no --out (theirs is
    their own), job files by job name, a kernel image as BZIMAGE."""
    out: List[str] = []
    i = 0
    while i < len(words):
        w = words[i]
        if w in _DROP:
            i += 2
            continue
        if any(w.startswith(f"{o}=") for o in _DROP):
            i += 1
            continue
        if w in ("--job", "--kernel") and i + 1 < len(words):
            out += [w, job_word(words[i + 1]) if w == "--job" else "BZIMAGE"]
            i += 2
            continue
        out.append("--job=" + job_word(w[6:]) if w.startswith("--job=") else w)
        i += 1
    if out and out[0].endswith("tlbprobe"):
        out[0] = "tlbprobe"
    return out


#: options whose value is the maker's own file or directory, left out of a reproduce line
_DROP = ("--out", "-o", "--junit", "--json")


def _inner(run: Run) -> List[str]:
    cmd = run.run_yaml.get("command")
    words = [str(w) for w in cmd] if isinstance(cmd, list) else []
    return clean_words(words)


def _collect_line(run: Run) -> Tuple[Optional[str], str]:
    words = _inner(run)
    if not words:
        return None, "run.yaml records no command"
    return shlex.join(words), "as root, on each kernel"


def _repro_job(run: Run, inner: List[str]) -> Optional[List[str]]:
    """How repro names the job a guest ran: --job NAME for a job file, --size S for its
    own collapse (workflows/repro.py seed_job); None when the guest's collect is neither
    (an older repro's options: the qemu collect line reproduces it instead)."""
    if "--job" in inner:
        return ["--job", inner[inner.index("--job") + 1]]
    if "--size" in inner:
        # the words of workflows/repro.py sweep_job() (not imported: it imports the kernel builder)
        size = inner[inner.index("--size") + 1]
        if inner[:2] == ["--workload", run.workload] and inner[2:] == [
                "--size", size, "--repeat", "1", "--idle-seconds", "1", "--cpu", "0"]:
            return ["--size", size]
    return None


def _guest_line(run: Run, q: Dict[str, Any], by: Optional[StartedBy], thread: Optional[str]) -> Tuple[Optional[str], str]:
    """The repro or qemu collect line that makes the guest run again, never the inner collect."""
    if by and by.argv:
        return shlex.join(clean_words(by.argv)), f"as recorded (run.yaml qemu.started_by)"
    inner = _inner(run)[2:]  # after "tlbprobe collect"
    inner = [w for i, w in enumerate(inner) if w != "--kernel-variant" and (i == 0 or inner[i - 1] != "--kernel-variant")]
    accel = str(q.get("accel") or "auto")
    guest = ["--smp", str(q.get("smp", "?")), "--accel", accel]
    if by and by.command == "repro":
        job = _repro_job(run, inner)
        if job is not None:
            race = run.job.get("race") is True
            default_thread = "multi" if race else "single"  # repro --race runs multi-threaded TCG
            if accel == "tcg" and thread and thread != default_thread:
                guest += ["--tcg-thread", thread]
            line = shlex.join(["tlbprobe", "repro", *guest, *(["--race"] if race else []), *job])
            return line, "reconstructed from run.yaml's guest facts: the repro command itself is not recorded"
    if accel == "tcg" and thread:
        guest += ["--tcg-thread", thread]
    if q.get("memory"):
        guest += ["--memory", str(q["memory"])]
    line = shlex.join(["tlbprobe", "qemu", "collect", "--kernel", "BZIMAGE", *guest, "--", *inner])
    return line, "reconstructed from run.yaml's guest facts: the command that started the guest is not recorded"


def machine_name(run: Run) -> str:
    """The machine a run was measured on, for grouping a fleet: its host name when a real
    one is recorded, else its provenance's description of it."""
    name = run.hostname
    if name and name not in ("(none)", "localhost"):
        return name
    p = provenance(run)
    if p.guest_of_qemu:
        shape = f"QEMU {'TCG' if p.environment == 'qemu-tcg' else 'KVM'} guest, {p.vcpus or p.cpus} vCPUs"
        return f"{p.host_name}: {shape}" if p.host_name else shape
    return f"{p.cpu_model or 'unknown CPU'}, {p.cpus} CPUs"
