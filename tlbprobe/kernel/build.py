"""`tlbprobe kernel build`: guest kernels from Debian's linux-source (or a tree of yours),
with optional patches, cached by what went into them.

Layout under the cache (``$TLBPROBE_CACHE`` or ~/.cache/tlbprobe):
  src/<tarball name>/          the unpacked Debian source, shared by every build of it
  build/<tree key>/            one O= build directory per source + config: baseline and
                               patched builds share it, so the second one only recompiles
                               what the patches touch (under a minute instead of 15)
  kernels/<key>/bzImage        the result, keyed by source + config + patches
  kernels/<key>/build.log      make's full output
  kernels/<key>/meta.json      what went in: source, config fragments, patches, times
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

from ..datafiles import locate
from ..errors import InputError, TlbprobeError
from . import series

KERNELS_DIR = locate("kernels")
DEFAULT_FRAGMENT = KERNELS_DIR / "config" / "tlbprobe-guest.config"
#: the debug flavour's second fragment (KASAN, DEBUG_VM, PAGE_TABLE_CHECK): kernel build --debug
DEBUG_FRAGMENT = KERNELS_DIR / "config" / "tlbprobe-debug.config"
OUR_PATCHES = sorted((KERNELS_DIR / "patches").glob("*.patch"))
DEBIAN_TARBALLS = "/usr/src/linux-source-*.tar.xz"
#: Options the guest cannot do without; a build whose .config lacks one is refused.
#: "A|B": either will do (hugetlb PMD sharing is HUGETLB_PMD_PAGE_TABLE_SHARING since 6.8,
#: the architecture's ARCH_WANT_HUGE_PMD_SHARE before, e.g. in Debian 12's 6.1).
REQUIRED_OPTIONS = ("CONFIG_SMP", "CONFIG_TRANSPARENT_HUGEPAGE", "CONFIG_HUGETLBFS",
                    "CONFIG_HUGETLB_PMD_PAGE_TABLE_SHARING|CONFIG_ARCH_WANT_HUGE_PMD_SHARE",
                    "CONFIG_EVENT_TRACING", "CONFIG_9P_FS", "CONFIG_NET_9P_VIRTIO", "CONFIG_VIRTIO_PCI",
                    "CONFIG_SERIAL_8250_CONSOLE", "CONFIG_MMU_GATHER_RCU_TABLE_FREE")
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


@dataclass
class BuiltKernel:
    key: str
    bzimage: Path
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
    args = ["patch", "-p1", "--batch", "--silent", "-i", str(p.resolve())] + (["-R"] if reverse else ["--forward"])
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


def configure(tree: Path, build: Path, fragments: List[Path]) -> None:
    """x86_64_defconfig + kvm_guest.config + our fragments, checked for what the guest needs."""
    build.mkdir(parents=True, exist_ok=True)
    make = ["make", "-s", "-C", str(tree), f"O={build}"]
    merge = [str(tree / "scripts/kconfig/merge_config.sh"), "-m", "-O", str(build), str(build / ".config"),
             str(tree / "kernel/configs/kvm_guest.config")] + [str(f.resolve()) for f in fragments]
    for step in (make + ["x86_64_defconfig"], merge, make + ["olddefconfig"]):
        try:
            subprocess.run(step, check=True, capture_output=True, text=True, cwd=tree)
        except (subprocess.CalledProcessError, OSError) as e:
            (build / ".config").unlink(missing_ok=True)  # half-made: the next build configures again
            out = getattr(e, "stderr", None) or getattr(e, "stdout", None) or str(e)
            tail = "\n".join(str(out).strip().splitlines()[-5:])
            raise BuildError(f"configuring the kernel in {build} failed ({' '.join(step[:4])} ...):\n{tail}") from None


def check_config(build: Path) -> None:
    """Refuse a .config without what the guest needs (checked on every build, not only
    after configure: a refused config stays in the build directory)."""
    config = (build / ".config").read_text()
    missing = [o.replace("|", " or ") for o in REQUIRED_OPTIONS
               if not any(re.search(rf"^{alt}=y$", config, re.M) for alt in o.split("|"))]
    if missing:
        raise BuildError(f"the kernel config in {build} lacks {', '.join(missing)}: check the config fragments")


def _run_make(tree: Path, build: Path, jobs: int, log_path: Path, status: Callable[[str], None]) -> None:
    """make bzImage, its output condensed to a status line, all of it kept in log_path."""
    cmd = ["make", "-C", str(tree), f"O={build}", f"-j{jobs}", "bzImage"]
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
    def cached(self) -> bool:
        return (self.entry / "bzImage").exists()


def plan_build(spec: KernelSpec) -> BuildPlan:
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
    for f in spec.fragments:
        if not f.is_file():
            raise InputError(f"{f}: no such config fragment")
    frag_bytes = [f.read_bytes() for f in spec.fragments]
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
    if plan.cached and not force:
        return _from_cache(plan.key, plan.entry)
    with build_lock(log):
        if plan.cached and not force:  # another process built it while we waited
            return _from_cache(plan.key, plan.entry)
        return _build(plan.spec, plan.tree, plan.tarball, plan.tree_key, plan.key, plan.entry, log, status)


def _from_cache(key: str, entry: Path) -> BuiltKernel:
    meta = json.loads((entry / "meta.json").read_text())
    return BuiltKernel(key, entry / "bzImage", entry / "build.log", meta.get("release", "?"), True, 0.0)


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
    bzimage = entry / "bzImage"
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
            configure(tree, build, spec.fragments)
        check_config(build)
        log(f"building {key} ({len(spec.patches)} patch(es)) in {build}, log {entry / 'build.log'}")
        _run_make(tree, build, spec.jobs, entry / "build.log", status)
    finally:
        reverse_series(tree)
    seconds = time.monotonic() - start
    release = (build / "include/config/kernel.release").read_text().strip()
    shutil.copy2(build / "arch/x86/boot/bzImage", bzimage)
    meta = {"key": key, "release": release, "source": str(tarball or spec.source),
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
            "series": series_record(patches)}


def as_dict(k: BuiltKernel) -> dict:
    d = asdict(k)
    return {key: str(v) if isinstance(v, Path) else v for key, v in d.items()}
