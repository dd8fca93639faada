"""`tlbprobe kernel build`: guest kernels from Debian's linux-source (or a tree of yours),
with optional patches, cached by what went into them.

Layout under the cache (``$TLBPROBE_CACHE`` or ~/.cache/tlbprobe):
  src/<tarball name>/          the unpacked Debian source, shared by every build of it
  build/<tree key>/            one O= build directory per source + config: baseline and
                               patched builds share it, so the second one only recompiles
                               what the patches touch (under a minute instead of 15)
  kernels/<key>/bzImage        the result, keyed by source + config + patches (+ the
                               architecture, when it is not x86_64: its image, e.g. Image)
  kernels/<key>/build.log      make's full output
  kernels/<key>/meta.json      what went in: source, config base and fragments, patches, times
Patches are applied to the source tree for the build and reversed afterwards, whatever
happens, so the tree stays pristine for the next build.
"""

from __future__ import annotations

import fcntl
import glob
import hashlib
import json
import os
import re
import shutil
import subprocess
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterator, List, Optional, Tuple

from .. import arch as arches
from ..arch import Arch
from ..datafiles import locate
from ..errors import InputError, TlbprobeError
from . import series

KERNELS_DIR = locate("kernels")
DEFAULT_FRAGMENT = KERNELS_DIR / "config" / "tlbprobe-guest.config"
#: the debug flavour's second fragment (KASAN, DEBUG_VM, PAGE_TABLE_CHECK): kernel build --debug
DEBUG_FRAGMENT = KERNELS_DIR / "config" / "tlbprobe-debug.config"
#: the minimal base's own fragment, applied after `make tinyconfig` (see CONFIG_BASES)
MINIMAL_FRAGMENT = KERNELS_DIR / "config" / "tlbprobe-minimal.config"
#: The oldest tree the minimal base makes a bootable guest of. Debian 12's 6.1 built from it
#: (with INET for its 9P_FS and MODULES for its KPROBES) but could not mount the 9p root
#: ("9pnet_virtio: no channels available for device root"), so older trees are built from
#: the defconfig base, which boots them (analysis/runs/tcg61-*), and the build says so.
MINIMAL_SINCE = (6, 12)
OUR_PATCHES = sorted((KERNELS_DIR / "patches").glob("*.patch"))
#: test only (kernels/test-only/): with WRAP_FLUSH_PARAM on the command line, x86's
#: pv_ops.mmu.flush_tlb_multi is a wrapper of native_flush_tlb_multi(), so a TCG guest
#: takes the paravirtual branch of the series (repro --pv-tlb-flush wrapper)
WRAP_FLUSH_PATCH = KERNELS_DIR / "test-only" / "0001-TEST-ONLY-x86-tlb-wrap-native-flush_tlb_multi.patch"
WRAP_FLUSH_PARAM = "tlbprobe_wrap_flush"
#: the check flavour's instrumentation (repro --audit: both kernels carry it, so they still
#: differ by the series alone; measure/tablesync.py reads what it records)
CHECK_PATCH = KERNELS_DIR / "instrumentation" / "0001-tlbprobe-check-record-every-table-sync-and-its-flush.patch"
DEBIAN_TARBALLS = "/usr/src/linux-source-*.tar.xz"


@dataclass(frozen=True)
class ConfigBase:
    """Where a .config starts, before the spec's fragments: a make target that writes a
    whole .config, then fragments of the kernel tree's own (paths inside the tree) and
    of ours, merged with scripts/kconfig/merge_config.sh, then olddefconfig."""

    name: str
    target: str
    tree_fragments: Tuple[str, ...] = ()
    fragments: Tuple[Path, ...] = ()
    #: (version, fragment): merged after `fragments` when the tree is older than version;
    #: Kconfig dependencies move between releases (6.1's 9P_FS needs INET, its KPROBES
    #: MODULES; 6.12's need neither) and a base must not pay for the old ones in new trees
    older: Tuple[Tuple[Tuple[int, int], Path], ...] = ()
    #: the target and the tree's fragments are the architecture's defconfig ones
    #: (tlbprobe/arch/: x86_64_defconfig + kvm_guest.config, arm64's defconfig + ...)
    arch_defconfig: bool = False

    def for_arch(self, arch: Arch) -> "ConfigBase":
        """This base for a kernel of ``arch``."""
        if not self.arch_defconfig:
            return self
        return replace(self, target=arch.build.defconfig, tree_fragments=arch.build.defconfig_fragments)

    def fragments_for(self, version: Optional[Tuple[int, int]]) -> Tuple[Path, ...]:
        """Our fragments of this base for a tree of this version (None: unknown, taken as new)."""
        return self.fragments + tuple(f for v, f in self.older if version is not None and version < v)

    def all_fragments(self) -> Tuple[Path, ...]:
        """Every fragment the base can use, whatever the tree: what its cache key covers."""
        return self.fragments + tuple(f for _, f in self.older)


#: The configuration bases. "defconfig": x86_64_defconfig + the kernel's kvm_guest.config,
#: what every kernel was built from until now (6.12: about 2,240 objects, 6 minutes on two
#: cores). "minimal": `make tinyconfig` (allnoconfig with EXPERT, then tiny.config's -Os,
#: XZ, SLUB_TINY and UNWINDER_GUESS) + kernels/config/tlbprobe-minimal.config, which undoes
#: those four and turns on what a guest running tlbprobe needs; about half the build
#: (benchmarks/README.md, "Guest kernel builds": 1,159 objects against 2,280 in 6.12).
CONFIG_BASES = {
    # the default architecture's (x86_64_defconfig + kvm_guest.config); for_arch() another's
    "defconfig": ConfigBase("defconfig", arches.get(arches.DEFAULT).build.defconfig,
                            arches.get(arches.DEFAULT).build.defconfig_fragments, arch_defconfig=True),
    "minimal": ConfigBase("minimal", "tinyconfig", (), (MINIMAL_FRAGMENT,)),
}
#: The base of every KernelSpec not told otherwise: switching all builds is this line.
DEFAULT_BASE = "minimal"

#: Options the guest and its jobs cannot do without, and what for; a build whose .config
#: lacks one (after olddefconfig: a dependency missing drops an option silently) is
#: refused, naming it. "A|B": either will do (hugetlb PMD sharing is
#: HUGETLB_PMD_PAGE_TABLE_SHARING since 6.8, the architecture's ARCH_WANT_HUGE_PMD_SHARE
#: before, e.g. in Debian 12's 6.1). Every name exists in 6.1 and 6.12.
REQUIRED = (
    # the sync under study: x86 selects MMU_GATHER_RCU_TABLE_FREE only with PARAVIRT
    # (arch/x86/Kconfig); without it tlb_remove_table_sync_one() is an empty stub
    ("CONFIG_64BIT", "an x86-64 guest"),
    ("CONFIG_SMP", "more than one CPU"),
    ("CONFIG_PARAVIRT", "selects MMU_GATHER_RCU_TABLE_FREE"),
    ("CONFIG_KVM_GUEST", "KVM's paravirtual TLB flush (--pv-tlb-flush)"),
    ("CONFIG_MMU_GATHER_RCU_TABLE_FREE", "tlb_remove_table_sync_one() is empty without it"),
    # booting the guest (tlbprobe/vm/guest.py): 9p root over virtio-pci, serial console,
    # a #! init script, proc/sysfs/devtmpfs/tmpfs, power-off with sysrq-o (ACPI)
    ("CONFIG_VIRTIO_PCI", "the 9p shares' transport"),
    ("CONFIG_NET_9P_VIRTIO", "the root and output shares"),
    ("CONFIG_9P_FS", "the root and output shares"),
    ("CONFIG_SERIAL_8250_CONSOLE", "console=ttyS0"),
    ("CONFIG_PRINTK", "the console log and /dev/kmsg"),
    ("CONFIG_BINFMT_ELF", "the host's programs"),
    ("CONFIG_BINFMT_SCRIPT", "the guest's init is a #! script"),
    ("CONFIG_PROC_FS", "/proc/interrupts, /proc/vmstat"),
    ("CONFIG_PROC_SYSCTL", "/proc/sys/vm/nr_hugepages"),
    ("CONFIG_SYSFS", "THP and CPU sysfs files"),
    ("CONFIG_DEVTMPFS", "/dev in the guest"),
    ("CONFIG_TMPFS", "/run in the guest"),
    ("CONFIG_MAGIC_SYSRQ", "power-off with sysrq-o"),
    ("CONFIG_ACPI", "QEMU's power-off"),
    ("CONFIG_MULTIUSER", "user and group ids"),
    ("CONFIG_FUTEX", "threads"),
    ("CONFIG_POSIX_TIMERS", "clock_nanosleep (cyclictest)"),
    ("CONFIG_HIGH_RES_TIMERS", "cyclictest's wake-ups"),
    ("CONFIG_HZ_1000", "the lpj= preset of TCG guests is for HZ=1000"),
    # what the jobs do
    ("CONFIG_ADVISE_SYSCALLS", "madvise()"),
    ("CONFIG_TRANSPARENT_HUGEPAGE", "MADV_COLLAPSE, khugepaged"),
    ("CONFIG_VM_EVENT_COUNTERS", "/proc/vmstat thp_collapse_alloc: the collapse count"),
    ("CONFIG_HUGETLBFS", "the hugetlb jobs"),
    ("CONFIG_HUGETLB_PMD_PAGE_TABLE_SHARING|CONFIG_ARCH_WANT_HUGE_PMD_SHARE", "hugetlb PMD sharing"),
    ("CONFIG_MEMFD_CREATE", "the hugetlb jobs' memfd"),
    ("CONFIG_GUP_TEST", "/sys/kernel/debug/gup_test (gup-fast)"),
    # observing it
    ("CONFIG_EVENT_TRACING", "the csd, ipi and irq_vectors events"),
    ("CONFIG_PERF_EVENTS", "the in-kernel sync counter"),
    ("CONFIG_KALLSYMS", "the sync counter's filter needs the function's address"),
    ("CONFIG_KPROBE_EVENTS", "attribution on kernels without csd events"),
    ("CONFIG_DEBUG_FS", "gup_test"),
    ("CONFIG_UNWINDER_ORC|CONFIG_UNWINDER_FRAME_POINTER", "kernel stacks that name a caller"),
)
REQUIRED_OPTIONS = tuple(o for o, _ in REQUIRED)
#: Numeric options and their least value: repro --smp 64 needs 64 possible CPUs.
REQUIRED_AT_LEAST = {"CONFIG_NR_CPUS": 64}
#: With the debug fragment: what the debug flavour is for (kernels/config/tlbprobe-debug.config).
DEBUG_REQUIRED = (("CONFIG_KASAN", "use-after-free checks"), ("CONFIG_DEBUG_VM", "VM_BUG_ON()s"),
                  ("CONFIG_PAGE_TABLE_CHECK", "page-table mapping checks"))
KBUILD_FORMAT = 1  # bump when the way we build changes, so old cache entries are not reused


class BuildError(TlbprobeError):
    exit_code = 5


def cache_root() -> Path:
    return Path(os.environ.get("TLBPROBE_CACHE", Path.home() / ".cache" / "tlbprobe"))


@dataclass
class KernelSpec:
    """What a kernel is built from."""

    source: Optional[Path] = None          # a kernel tree or tarball; None: the newest Debian linux-source
    fragments: List[Path] = field(default_factory=lambda: [DEFAULT_FRAGMENT])
    patches: List[Path] = field(default_factory=list)
    jobs: int = os.cpu_count() or 2
    base: str = DEFAULT_BASE               # a key of CONFIG_BASES: where the .config starts
    #: the guest architecture (a name of tlbprobe/arch/); in the cache key when not x86_64
    arch: str = arches.DEFAULT


@dataclass
class BuiltKernel:
    key: str
    bzimage: Path                          # the bootable image: bzImage on x86, Image on arm64
    log: Path
    release: str
    cached: bool
    seconds: float


def _sha(*parts: bytes) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(len(p).to_bytes(8, "little"))
        h.update(p)
    return h.hexdigest()[:16]


def _version_key(path: str) -> Tuple[int, ...]:
    """'/usr/src/linux-source-6.12.tar.xz' -> (6, 12): 6.12 is newer than 6.9 and 6.1."""
    m = re.search(r"linux-source-([\d.]+?)\.tar", path)
    return tuple(int(x) for x in m.group(1).split(".")) if m else ()


def debian_tarball() -> Path:
    """The newest installed Debian linux-source tarball (kernels/patches targets 6.12)."""
    found = sorted(glob.glob(DEBIAN_TARBALLS), key=_version_key)
    if not found:
        raise InputError("no kernel source: install Debian's linux-source package "
                         "(apt-get install linux-source-6.12) or give --source DIR")
    return Path(found[-1])


def is_tarball(path: Path) -> bool:
    return path.is_file() and ".tar" in path.name


def unpacked(tarball: Path) -> Optional[Path]:
    """Where a source tarball is unpacked in the cache, when it already is."""
    dest = cache_root() / "src" / tarball.name.split(".tar")[0]
    return dest if (dest / "Makefile").exists() and (dest / ".tlbprobe-unpacked").exists() else None


def unpack(tarball: Path, log: Callable[[str], None]) -> Path:
    """The unpacked tree of a Debian source tarball (unpacked once, then reused)."""
    name = tarball.name.split(".tar")[0]
    dest = cache_root() / "src" / name
    if unpacked(tarball):
        return dest
    log(f"unpacking {tarball} (once)")
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    subprocess.run(["tar", "xf", str(tarball), "-C", str(tmp), "--strip-components=1"], check=True)
    (tmp / ".tlbprobe-unpacked").write_text(str(tarball))
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    return dest


def tree_identity(source: Path) -> bytes:
    """What identifies a tree's contents: git HEAD plus uncommitted changes, or the Makefile version."""
    git = subprocess.run(["git", "-C", str(source), "rev-parse", "HEAD"], capture_output=True, text=True)
    if git.returncode == 0:
        dirty = subprocess.run(["git", "-C", str(source), "diff", "HEAD"], capture_output=True).stdout
        return git.stdout.strip().encode() + dirty
    return str(source.resolve()).encode() + (source / "Makefile").read_bytes()[:400]


def patch_paths(text: str) -> List[str]:
    """The file names a unified diff writes (its ---/+++ lines, and git's rename/copy lines)."""
    out = []
    for line in text.splitlines():
        m = re.match(r"(?:\+\+\+|---) (\S+)", line) or re.match(r"(?:rename|copy) (?:from|to) (\S+)", line)
        if m and m.group(1) != "/dev/null":
            out.append(m.group(1))
    return out


def check_patch_paths(patch: Path, text: str) -> None:
    """Refuse a patch that would write outside the tree: an absolute path, or one that
    climbs out with '..' (patch -p1 strips one component and then follows the rest)."""
    for name in patch_paths(text):
        parts = name.split("/")[1:] if "/" in name else [name]  # what -p1 leaves
        if name.startswith("/") or ".." in parts:
            raise InputError(f"{patch}: refused: it writes {name!r}, outside the kernel tree")


def check_patch(patch: Path, tree: Path) -> None:
    """Refuse a patch that writes outside the tree or does not apply, naming the file and
    the hunks that fail."""
    if not patch.is_file():
        raise InputError(f"{patch}: no such patch file")
    try:
        check_patch_paths(patch, patch.read_text(errors="replace"))
    except OSError as e:
        raise InputError(f"{patch}: cannot read: {e.strerror}") from None
    res = subprocess.run(["patch", "-p1", "--dry-run", "--batch", "--forward", "-i", str(patch.resolve())],
                         cwd=tree, capture_output=True, text=True)
    if res.returncode == 0:
        return
    current, failed = "?", []
    for line in res.stdout.splitlines():
        m = re.match(r"checking file (\S+)", line)
        if m:
            current = m.group(1)
        m = re.match(r"Hunk #(\d+) FAILED at (\d+)", line)
        if m:
            failed.append(f"{current} hunk #{m.group(1)} (line {m.group(2)})")
        if "Reversed (or previously applied) patch detected" in line:
            failed.append(f"{current}: already applied")
    detail = "; ".join(failed) or (res.stdout + res.stderr).strip().splitlines()[-1]
    raise InputError(f"{patch}: does not apply to {tree}: {detail}")


APPLIED = ".tlbprobe-applied"  # in the source tree: copies of the patches applied right now


def _patch(p: Path, tree: Path, reverse: bool) -> None:
    # no .orig backups: a hunk that applies with fuzz must not leave files in the cached tree
    args = ["patch", "-p1", "--batch", "--silent", "--no-backup-if-mismatch", "-i", str(p.resolve())] + \
        (["-R"] if reverse else ["--forward"])
    subprocess.run(args, cwd=tree, check=True, capture_output=True)


def apply_series(patches: List[Path], tree: Path) -> None:
    """Apply a series in order, each checked against the tree as the previous ones left it
    (so patch 2 may build on patch 1). Copies go to tree/.tlbprobe-applied first, so a
    build killed halfway can be undone by the next one. On a failure the patches already
    applied are reversed and the failing file and hunk are named."""
    record = tree / APPLIED
    record.mkdir(exist_ok=True)
    for i, p in enumerate(patches):
        try:
            check_patch(p, tree)
        except InputError:
            reverse_series(tree)
            raise
        shutil.copy2(p, record / f"{i:04d}-{p.name}")
        _patch(p, tree, reverse=False)


def reverse_series(tree: Path) -> None:
    """Undo what apply_series applied (also after a killed build), newest first."""
    record = tree / APPLIED
    if not record.is_dir():
        return
    for copy in sorted(record.iterdir(), reverse=True):
        _patch(copy, tree, reverse=True)
        copy.unlink()
    record.rmdir()


def config_base(name: str) -> ConfigBase:
    try:
        return CONFIG_BASES[name]
    except KeyError:
        raise InputError(f"config base {name!r}: choose {' or '.join(CONFIG_BASES)}") from None


def tree_version(tree: Path) -> Optional[Tuple[int, int]]:
    """VERSION.PATCHLEVEL from the tree's top Makefile (None when it has none)."""
    try:
        head = (tree / "Makefile").read_text(errors="replace")[:2000]
    except OSError:
        return None
    v = re.search(r"^VERSION\s*=\s*(\d+)", head, re.M)
    p = re.search(r"^PATCHLEVEL\s*=\s*(\d+)", head, re.M)
    return (int(v.group(1)), int(p.group(1))) if v and p else None


def tarball_version(tarball: Path) -> Optional[Tuple[int, int]]:
    """VERSION.PATCHLEVEL of a source tarball: of its unpacked tree when there is one, else
    from its name (linux-source-6.1.tar.xz, linux-6.12.1.tar.gz); None when neither says."""
    tree = unpacked(tarball)
    if tree is not None:
        return tree_version(tree)
    m = re.match(r"linux(?:-source)?-(\d+)\.(\d+)", tarball.name)
    return (int(m.group(1)), int(m.group(2))) if m else None


def configure(tree: Path, build: Path, fragments: List[Path], base: ConfigBase = CONFIG_BASES["defconfig"],
              make_args: Tuple[str, ...] = ()) -> None:
    """The base's .config (make target, its fragments) + our fragments, then olddefconfig.
    ``make_args``: ARCH= and CROSS_COMPILE= of a cross-build (Arch.make_args)."""
    build.mkdir(parents=True, exist_ok=True)
    make = ["make", "-s", "-C", str(tree), f"O={build}", *make_args]
    merge = [str(tree / "scripts/kconfig/merge_config.sh"), "-m", "-O", str(build), str(build / ".config")]
    ours = (*base.fragments_for(tree_version(tree)), *fragments)
    merge += [str(tree / f) for f in base.tree_fragments] + [str(f.resolve()) for f in ours]
    for step in (make + [base.target], merge, make + ["olddefconfig"]):
        try:
            subprocess.run(step, check=True, capture_output=True, text=True, cwd=tree)
        except (subprocess.CalledProcessError, OSError) as e:
            (build / ".config").unlink(missing_ok=True)  # half-made: the next build configures again
            out = getattr(e, "stderr", None) or getattr(e, "stdout", None) or str(e)
            tail = "\n".join(str(out).strip().splitlines()[-5:])
            raise BuildError(f"configuring the kernel in {build} failed ({' '.join(step[:4])} ...):\n{tail}") from None


def required_options(fragments: List[Path]) -> Tuple[Tuple[str, str], ...]:
    """What a build of these fragments must have: REQUIRED, and DEBUG_REQUIRED with the
    debug fragment."""
    debug = any(f.resolve() == DEBUG_FRAGMENT.resolve() for f in fragments)
    return REQUIRED + (DEBUG_REQUIRED if debug else ())


def missing_options(config: str, required=REQUIRED) -> List[str]:
    """The required options a .config's text lacks, each with what it is for."""
    missing = [f"{o.replace('|', ' or ')} ({why})" for o, why in required
               if not any(re.search(rf"^{alt}=y$", config, re.M) for alt in o.split("|"))]
    for o, least in REQUIRED_AT_LEAST.items():
        m = re.search(rf"^{o}=(\d+)$", config, re.M)
        if not m or int(m.group(1)) < least:
            missing.append(f"{o} >= {least} (it is {m.group(1) if m else 'unset'})")
    return missing


def check_config(build: Path, required=REQUIRED) -> None:
    """Refuse a .config without what the guest needs (checked on every build, not only
    after configure: a refused config stays in the build directory)."""
    missing = missing_options((build / ".config").read_text(), required)
    if missing:
        raise BuildError(f"the kernel config in {build} lacks {', '.join(missing)}: check the config fragments")


def _run_make(tree: Path, build: Path, jobs: int, log_path: Path, status: Callable[[str], None],
              target: str = "bzImage", make_args: Tuple[str, ...] = ()) -> None:
    """make the image (the architecture's target: bzImage, Image), its output condensed to
    a status line, all of it kept in log_path."""
    cmd = ["make", "-C", str(tree), f"O={build}", *make_args, f"-j{jobs}", target]
    steps = 0
    start = time.monotonic()
    with open(log_path, "w") as logf:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert proc.stdout
        for line in proc.stdout:
            logf.write(line)
            m = re.match(r"\s+(CC|LD|AR|AS|GEN|HOSTCC|OBJCOPY)\s+(\S+)", line)
            if m:
                steps += 1
                status(f"kernel build: {steps} steps, {time.monotonic() - start:4.0f} s: {m.group(1)} {m.group(2)}")
        rc = proc.wait()
    status("")
    if rc != 0:
        tail = "".join(open(log_path).readlines()[-15:])
        raise BuildError(f"kernel build failed (make exit {rc}); full log: {log_path}\n{tail}")


@dataclass
class BuildPlan:
    """What a build would use, resolved: the source, fragments, patches (a series
    expanded) and the cache entry; `tlbprobe kernel build --dry-run` prints it."""

    spec: KernelSpec
    tree: Optional[Path]
    tarball: Optional[Path]
    tree_key: str
    key: str
    entry: Path

    @property
    def arch(self) -> Arch:
        return arches.get(self.spec.arch)

    @property
    def image(self) -> Path:
        """Where the cache keeps the built image (kernels/<key>/bzImage on x86)."""
        return self.entry / self.arch.image.name

    @property
    def cached(self) -> bool:
        return self.image.exists()


def plan_build(spec: KernelSpec) -> BuildPlan:
    """What a build of ``spec`` uses and where the cache keeps it. An architecture whose
    build is not done yet (its record's not_done) is refused here, before anything."""
    arch = arches.get(spec.arch)
    arch.require("build", f"kernel build --arch {arch.name}")
    if spec.source is None or is_tarball(spec.source):
        tarball = spec.source or debian_tarball()
        src_id = f"{tarball.name}:{tarball.stat().st_size}".encode()
        tree = None
    else:
        if not (spec.source / "Makefile").is_file() or not (spec.source / "mm").is_dir():
            raise InputError(f"{spec.source}: not a kernel source tree (no Makefile and mm/) "
                             f"nor a source tarball (.tar.xz, .tar.gz)")
        src_id = tree_identity(spec.source)
        tree = spec.source
        tarball = None
    version = tree_version(tree) if tree is not None else tarball_version(tarball)
    if spec.base == "minimal" and version is not None and version < MINIMAL_SINCE:
        spec = replace(spec, base="defconfig")  # see MINIMAL_SINCE
    base = config_base(spec.base).for_arch(arch)
    for f in (*base.all_fragments(), *spec.fragments):
        if not f.is_file():
            raise InputError(f"{f}: no such config fragment")
    frag_bytes = [f.read_bytes() for f in spec.fragments]
    if base.name != "defconfig":  # the defconfig base keeps the keys it always had
        frag_bytes = [f"base:{base.name}:{base.target}:{':'.join(base.tree_fragments)}".encode()] + \
            [f.read_bytes() for f in base.all_fragments()] + frag_bytes
    if arch.name != arches.DEFAULT:  # x86_64 keeps the keys it always had; others, their own
        frag_bytes = [f"arch:{arch.name}".encode()] + frag_bytes    # (and their own build directory)
    spec = replace(spec, patches=series.expand(list(spec.patches), cache_root() / "series"))
    for p in spec.patches:
        if not p.is_file():
            raise InputError(f"{p}: no such patch file")
    tree_key = _sha(str(KBUILD_FORMAT).encode(), src_id, *frag_bytes)
    if spec.patches:
        # keyed by what the series does to the tree, not by how it is cut into patches:
        # one diff and the same change as an mbox of two patches share a kernel
        key = _sha(tree_key.encode(), _series_effect_of(tree, tarball, spec.patches))
    else:
        key = _sha(tree_key.encode())
    return BuildPlan(spec, tree, tarball, tree_key, key, cache_root() / "kernels" / key)


def touched_files(patches: List[Path]) -> List[str]:
    """The tree's files a series touches (paths without the a/ b/ prefix), sorted."""
    return sorted({name.split("/", 1)[1] for p in patches for name in patch_paths(p.read_text(errors="replace"))
                   if "/" in name})


def extract_members(tarball: Path, files: List[str], dest: Path) -> None:
    """Only ``files`` of a source tarball, into ``dest`` (its top directory stripped): what
    the series' key needs, without unpacking 1.4 GB the first time a patched kernel's key
    is asked for (`kernel build --dry-run`). tar still reads the whole compressed stream,
    but writes only these; a file the tarball lacks is simply absent, as in the tree."""
    if not files:
        return
    subprocess.run(["tar", "xf", str(tarball), "-C", str(dest), "--strip-components=1", "--wildcards",
                    "--no-wildcards-match-slash", "--ignore-failed-read",
                    *[f"*/{glob_escape(f)}" for f in files]],
                   check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def glob_escape(name: str) -> str:
    """A file name as a tar wildcard that matches only itself."""
    return re.sub(r"([*?\[\]\\])", r"\\\1", name)


def _series_effect_of(tree: Optional[Path], tarball: Optional[Path], patches: List[Path]) -> bytes:
    """series_effect() on the user's tree, the cache's unpacked copy of the tarball, or
    (when it is not unpacked yet) the touched files taken from the tarball alone: the same
    bytes in each case, so the key does not depend on which."""
    import tempfile

    base = tree or (unpacked(tarball) if tarball is not None else None)
    if base is not None:
        return series_effect(base, patches)
    assert tarball is not None
    with tempfile.TemporaryDirectory(prefix="tlbprobe-members-") as tmp:
        extract_members(tarball, touched_files(patches), Path(tmp))
        return series_effect(Path(tmp), patches)


def series_effect(tree: Path, patches: List[Path]) -> bytes:
    """A digest of the files a series touches, as they are after it: the series is
    applied, in order, to copies of those files (the tree itself is not touched). A patch
    that does not apply is named here, before anything is built."""
    import tempfile

    files = touched_files(patches)
    for p in patches:
        check_patch_paths(p, p.read_text(errors="replace"))
    h = hashlib.sha256()
    with tempfile.TemporaryDirectory(prefix="tlbprobe-series-") as tmp:
        scratch = Path(tmp)
        for rel in files:
            src = tree / rel
            applied = tree / APPLIED
            if src.is_file() and not (applied.is_dir() and any(applied.iterdir())):
                (scratch / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, scratch / rel)
            elif src.is_file():  # a killed build left its patches applied: the copy would be wrong
                raise BuildError(f"{tree}: patches of a killed build are still applied ({applied}); "
                                 f"run the build again to reverse them")
        for p in patches:
            try:
                check_patch(p, scratch)
            except InputError as e:
                raise InputError(str(e).replace(str(scratch), str(tree))) from None
            _patch(p, scratch, reverse=False)
        for rel in files:
            f = scratch / rel
            data = f.read_bytes() if f.is_file() else b"\0absent"
            h.update(rel.encode() + b"\0" + len(data).to_bytes(8, "little") + data)
    return h.digest()


def build_kernel(spec: KernelSpec, log: Callable[[str], None] = print,
                 status: Callable[[str], None] = lambda s: None, force: bool = False) -> BuiltKernel:
    """Build (or find in the cache) the kernel a spec describes."""
    if shutil.which("make") is None or shutil.which("gcc") is None:
        raise InputError("building a kernel needs make and gcc: apt-get install build-essential bc flex bison "
                         "libelf-dev libssl-dev cpio")
    plan = plan_build(spec)
    cc = plan.arch.compiler(os.uname().machine)
    if shutil.which(cc) is None:
        raise InputError(f"a kernel build for {plan.arch.name} needs {cc} here: apt-get install "
                         f"{plan.arch.build.cross_package}")
    if plan.cached and not force:
        return _from_cache(plan.key, plan.entry, plan.image)
    with build_lock(log):
        if plan.cached and not force:  # another process built it while we waited
            return _from_cache(plan.key, plan.entry, plan.image)
        return _build(plan.spec, plan.tree, plan.tarball, plan.tree_key, plan.key, plan.entry, log, status)


def _from_cache(key: str, entry: Path, image: Optional[Path] = None) -> BuiltKernel:
    meta = json.loads((entry / "meta.json").read_text())
    return BuiltKernel(key, image or entry / "bzImage", entry / "build.log", meta.get("release", "?"), True, 0.0)


@contextmanager
def build_lock(log: Callable[[str], None]) -> Iterator[None]:
    """One kernel build at a time per cache: builds share source trees and build directories."""
    cache_root().mkdir(parents=True, exist_ok=True)
    with open(cache_root() / ".build.lock", "w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log("waiting for another tlbprobe kernel build to finish")
            fcntl.flock(f, fcntl.LOCK_EX)
        yield


def _build(spec: KernelSpec, tree: Optional[Path], tarball: Optional[Path], tree_key: str, key: str, entry: Path,
           log: Callable[[str], None], status: Callable[[str], None]) -> BuiltKernel:
    arch = arches.get(spec.arch)
    make_args = arch.make_args(os.uname().machine)
    bzimage = entry / arch.image.name
    base = config_base(spec.base).for_arch(arch)
    if tree is None:
        assert tarball is not None
        tree = unpack(tarball, log)
    build = cache_root() / "build" / tree_key
    entry.mkdir(parents=True, exist_ok=True)
    try:
        reverse_series(tree)  # a previous build was killed with its patches applied
    except subprocess.CalledProcessError:
        if tarball is None:  # the user's own tree: never delete it
            raise BuildError(f"{tree}: patches of a killed build are still applied and do not reverse; "
                             f"see {tree / APPLIED}") from None
        log(f"{tree}: patches of a killed build do not reverse; unpacking the source again")
        shutil.rmtree(tree)
        assert tarball is not None
        tree = unpack(tarball, log)
    start = time.monotonic()
    try:
        apply_series(spec.patches, tree)
        if not (build / ".config").exists():
            configure(tree, build, spec.fragments, base, make_args)
        check_config(build, required_options(spec.fragments))
        log(f"building {key} ({len(spec.patches)} patch(es)) in {build}, log {entry / 'build.log'}")
        _run_make(tree, build, spec.jobs, entry / "build.log", status, arch.image.target, make_args)
    finally:
        reverse_series(tree)
    seconds = time.monotonic() - start
    release = (build / "include/config/kernel.release").read_text().strip()
    shutil.copy2(build / arch.image.path, bzimage)
    meta = {"key": key, "release": release, "source": str(tarball or spec.source), "arch": arch.name,
            "base": base.name,
            "base_config": [base.target, *base.tree_fragments, *(str(f) for f in base.fragments_for(tree_version(tree)))],
            "fragments": [str(f) for f in spec.fragments], "patches": [str(p) for p in spec.patches],
            "seconds": round(seconds, 1), "built": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    (entry / "meta.json").write_text(json.dumps(meta, indent=1))
    return BuiltKernel(key, bzimage, entry / "build.log", release, False, seconds)


def variant_patches(variant: str, extra: Optional[List[Path]] = None) -> List[Path]:
    """Patches of a named variant: baseline = none; patched = ours, or the user's instead."""
    if variant == "baseline":
        return []
    return list(extra) if extra else list(OUR_PATCHES)


def series_record(patches: List[Path]) -> dict:
    """A patch series as a run records it: each patch's file name and Subject (its mail's
    subject line, series.subject(); the file name for a plain diff without one) and the
    series' key, a digest of the patches' contents in order, so two runs can be told to
    carry the same series whatever the files were called. A patch no longer readable
    keeps its name with the subject null."""
    h = hashlib.sha256()
    out = []
    for p in patches:
        try:
            data = Path(p).read_bytes()
        except OSError:
            out.append({"file": Path(p).name, "subject": None})
            h.update(b"\0unreadable" + str(p).encode())
            continue
        h.update(len(data).to_bytes(8, "little") + data)
        out.append({"file": Path(p).name, "subject": series.subject(data.decode("utf-8", "replace")) or None})
    return {"key": h.hexdigest()[:16] if patches else None, "patches": out}


def kernel_record(bzimage: Path) -> Optional[dict]:
    """What the kernel cache says about a bzImage it holds (kernels/<key>/meta.json: its
    key, release, source and patch series, with the patches' subjects), for a run's
    run.yaml ``qemu.kernel_build``; None for a kernel that did not come from the cache."""
    meta_path = Path(bzimage).parent / "meta.json"
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(meta, dict):
        return None
    patches = [Path(p) for p in meta.get("patches") or [] if isinstance(p, str)]
    return {"key": meta.get("key") or Path(bzimage).parent.name, "release": meta.get("release"),
            "source": meta.get("source"), "fragments": [Path(f).name for f in meta.get("fragments") or []],
            "series": series_record(patches), "arch": meta.get("arch") or arches.DEFAULT}


def as_dict(k: BuiltKernel) -> dict:
    d = asdict(k)
    return {key: str(v) if isinstance(v, Path) else v for key, v in d.items()}
