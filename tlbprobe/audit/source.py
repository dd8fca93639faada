"""The kernel tree the audit reads: a tree or a tarball, with a patch series applied in a
copy of only the files it touches, never in the tree itself.

The default tree is the one `tlbprobe kernel build` and `repro` build, Debian's newest
linux-source unpacked in the cache (tlbprobe/kernel/build.py debian_tarball(), unpack()).
That tree is shared: a build applies its series to it for the length of the build and
reverses it afterwards (kernel/build.py apply_series(), with copies of the patches in
``.tlbprobe-applied``). So the audit never writes to it, and never trusts it to be
pristine either:

- the files a series touches (kernel/build.py touched_files()) are copied into a
  temporary directory, the *overlay*; the patches are applied there with ``patch -p1``,
  each checked first (kernel/build.py check_patch(): one clear line naming the hunk
  that fails);
- when a build has its series applied right now (``.tlbprobe-applied`` is not empty),
  those patches are reversed in the overlay first, so the audit sees the tree as
  unpacked plus the series asked for, whatever the build is doing;
- reading a file of the view reads the overlay's copy when there is one, the tree's
  otherwise; the grep pre-filter runs over the tree, leaving the overlaid files out,
  and the overlay's files are searched by themselves.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, FrozenSet, Iterable, Iterator, List, Optional, Sequence, Tuple

from .. import files
from ..errors import InputError
from ..kernel import build

#: the file kinds the audit reads: C sources and headers
SUFFIXES = (".c", ".h")
#: a kernel source file larger than this is not one (the largest 6.12 .c/.h are generated
#: register headers of ~20 MiB)
MAX_SOURCE = 64 * files.MiB


@dataclass(frozen=True)
class Release:
    """The tree's version, from its top Makefile."""

    version: int
    patchlevel: int
    sublevel: int = 0
    extra: str = ""

    def __str__(self) -> str:
        return f"{self.version}.{self.patchlevel}" + (f".{self.sublevel}" if self.sublevel else "") + self.extra


def release_of(tree: Path) -> Release:
    """The release in ``tree``'s Makefile; InputError when the directory is not a kernel
    source tree (no such Makefile, or no mm/ and include/)."""
    makefile = tree / "Makefile"
    try:
        head = files.read_text(makefile, "a kernel Makefile", files.cap("text"))[:4096] if makefile.is_file() else ""
    except InputError:
        head = ""
    fields = dict(re.findall(r"^(VERSION|PATCHLEVEL|SUBLEVEL|EXTRAVERSION)[ \t]*=[ \t]*(\S*)", head, re.M))
    if not fields.get("VERSION", "").isdigit() or not fields.get("PATCHLEVEL", "").isdigit() \
            or not (tree / "mm").is_dir() or not (tree / "include").is_dir():
        raise InputError(f"{tree}: not a kernel source tree (it needs a top Makefile with VERSION and "
                         f"PATCHLEVEL, and mm/ and include/): give --source a kernel tree or a linux-source "
                         f"tarball")
    sub = fields.get("SUBLEVEL", "0")
    return Release(int(fields["VERSION"]), int(fields["PATCHLEVEL"]), int(sub) if sub.isdigit() else 0,
                   fields.get("EXTRAVERSION", ""))


def resolve_source(source: Optional[Path], log: Callable[[str], None]) -> Tuple[Path, str]:
    """(the tree to read, what it is called in the report) for --source: a tree, a
    tarball (unpacked once into the cache, as a kernel build would), or by default the
    newest Debian linux-source tarball."""
    if source is None:
        tarball = build.debian_tarball()
        return _unpacked(tarball, log), str(tarball)
    if not source.exists():
        raise InputError(f"--source {source}: no such file or directory")
    if source.is_dir():
        release_of(source)
        return source, str(source)
    if build.is_tarball(source):
        return _unpacked(source, log), str(source)
    raise InputError(f"--source {source}: neither a kernel source tree nor a source tarball (*.tar.xz)")


def _unpacked(tarball: Path, log: Callable[[str], None]) -> Path:
    tree = build.unpacked(tarball)
    if tree is not None:
        return tree
    try:
        return build.unpack(tarball, log)
    except (subprocess.CalledProcessError, OSError) as e:
        raise InputError(f"{tarball}: cannot be unpacked: {e}") from None


@dataclass
class SourceView:
    """A kernel tree as the audit reads it: ``root`` with the files in ``overlaid``
    coming from ``overlay`` instead (absent there: the series deleted them)."""

    root: Path
    label: str
    release: Release
    overlay: Optional[Path] = None
    overlaid: FrozenSet[str] = frozenset()
    patches: Tuple[Path, ...] = ()
    reversed_in_copy: Tuple[str, ...] = ()     # a build's patches found applied, undone in the copy
    _grep_cache: Dict[Tuple[str, ...], List[str]] = field(default_factory=dict, repr=False)

    def path_of(self, rel: str) -> Path:
        if rel in self.overlaid and self.overlay is not None:
            return self.overlay / rel
        return self.root / rel

    def read(self, rel: str) -> str:
        """A source file as text (bounded; bytes that are not UTF-8 read as U+FFFD)."""
        return files.read_bytes(self.path_of(rel), "a kernel source file", MAX_SOURCE).decode("utf-8", "replace")

    def exists(self, rel: str) -> bool:
        return self.path_of(rel).is_file()

    def grep(self, names: Iterable[str]) -> List[str]:
        """The .c and .h files of the view that contain one of ``names`` as a word: a
        pre-filter (comments count too; the scanner tells them apart)."""
        names = tuple(sorted(set(names)))
        if not names:
            return []
        if names not in self._grep_cache:
            self._grep_cache[names] = self._grep_tree(names)
        found = [rel for rel in self._grep_cache[names] if rel not in self.overlaid]
        rx = re.compile(r"\b(?:" + "|".join(re.escape(n) for n in names) + r")\b")
        for rel in sorted(self.overlaid):
            if rel.endswith(SUFFIXES) and self.exists(rel) and rx.search(self.read(rel)):
                found.append(rel)
        return sorted(found)

    def _grep_tree(self, names: Sequence[str]) -> List[str]:
        cmd = ["grep", "-rlwF", "--include=*.c", "--include=*.h", f"--exclude-dir={build.APPLIED}",
               "--exclude-dir=.git", *[f"-e{n}" for n in names], "."]
        res = subprocess.run(cmd, cwd=self.root, capture_output=True, text=True, env=dict(os.environ, LC_ALL="C"))
        if res.returncode > 1 and not res.stdout:
            why = (res.stderr.strip().splitlines() or ["grep failed"])[0]
            raise InputError(f"{self.root}: cannot search the tree: {why}")
        return sorted(line[2:] if line.startswith("./") else line for line in res.stdout.splitlines() if line)

    def share_grep(self, other: "SourceView") -> None:
        """Reuse another view's searches of the same tree (baseline and patched differ
        only in their overlays)."""
        if other.root == self.root:
            self._grep_cache = other._grep_cache


def applied_by_build(tree: Path) -> List[Path]:
    """The patches a build has applied to ``tree`` right now, in the order applied."""
    record = tree / build.APPLIED
    return sorted(record.iterdir()) if record.is_dir() else []


@contextmanager
def open_view(tree: Path, label: str, patches: Sequence[Path]) -> Iterator[SourceView]:
    """The view of ``tree`` with ``patches`` applied (in a temporary overlay, removed on
    exit); InputError naming the patch and hunk when one does not apply."""
    release = release_of(tree)
    applied = applied_by_build(tree)
    if not patches and not applied:
        yield SourceView(tree, label, release)
        return
    for p in patches:
        if not p.is_file():
            raise InputError(f"{p}: no such patch file")
        build.check_patch_paths(p, p.read_text(errors="replace"))
    with tempfile.TemporaryDirectory(prefix="tlbprobe-audit-") as tmp:
        overlay = Path(tmp) / "tree"
        overlay.mkdir()
        touched = build.touched_files([*applied, *patches])
        for rel in touched:
            src = tree / rel
            if src.is_file():
                (overlay / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src, overlay / rel)  # a copy of the bytes: the tree's file is only read
        if applied_by_build(tree) != applied:
            raise InputError(f"{tree}: a kernel build applied or reversed its patches while the audit copied "
                             f"the files: run the audit again")
        for p in reversed(applied):
            res = _patch(p, overlay, reverse=True)
            if res.returncode != 0:
                raise InputError(f"{tree}: a build has {len(applied)} patch(es) applied ({tree / build.APPLIED}) "
                                 f"and {p.name} does not reverse in the audit's copy: wait for the build to end")
        for p in patches:
            try:
                build.check_patch(p, overlay)
            except InputError as e:
                raise InputError(str(e).replace(str(overlay), str(tree))) from None
            _patch(p, overlay, reverse=False)
        yield SourceView(tree, label, release, overlay, frozenset(touched), tuple(patches),
                         tuple(p.name for p in applied))


def _patch(p: Path, tree: Path, reverse: bool) -> subprocess.CompletedProcess:
    args = ["patch", "-p1", "--batch", "--silent", "--no-backup-if-mismatch", "-i", str(p.resolve())]
    args += ["-R"] if reverse else ["--forward"]
    return subprocess.run(args, cwd=tree, capture_output=True, text=True)
