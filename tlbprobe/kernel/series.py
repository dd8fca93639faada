"""A patch series as kernel developers hold it: one diff, an mbox of several patches
(what `b4 am` and `git format-patch --stdout` write), or a directory of NNNN-*.patch
files (`git format-patch -o DIR`). Each becomes a list of single patches, in order, each
named by its Subject, so a patch that does not apply is named the way its author knows it.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import List

from ..errors import InputError

#: An mbox message separator: "From <sha> <date>" (git format-patch), "From git@z ..." (b4).
_FROM = re.compile(r"^From \S+ .*\d{4}$", re.M)
_SUBJECT = re.compile(r"^Subject:[ \t]*(.*(?:\n[ \t]+.*)*)", re.M)


def subject(message: str) -> str:
    """'Subject: [PATCH v7 2/2] x86/mm: skip ...' -> 'x86/mm: skip ...' (header folding undone)."""
    m = _SUBJECT.search(message)
    if not m:
        return ""
    text = re.sub(r"\s*\n[ \t]+", " ", m.group(1)).strip()
    return re.sub(r"^(\[[^\]]*\]\s*)+", "", text)


def split_mbox(text: str) -> List[str]:
    """The messages of an mbox that carry a diff; one element for a plain diff."""
    starts = [m.start() for m in _FROM.finditer(text)]
    if len(starts) < 1:
        return [text]
    parts = [text[a:b] for a, b in zip(starts, starts[1:] + [len(text)])]
    return [p for p in parts if re.search(r"^(---|\+\+\+) ", p, re.M)]


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-")[:64].strip("-") or "patch"


def expand(paths: List[Path], workdir: Path) -> List[Path]:
    """Single patch files, in order, for what the user gave. Split mbox messages are
    written to ``workdir/<digest>/NNNN-<subject>.patch`` (stable names: the cache key
    follows their content)."""
    out: List[Path] = []
    for path in paths:
        if path.is_dir():
            found = sorted(path.glob("*.patch"))
            if not found:
                raise InputError(f"{path}: a directory without *.patch files (git format-patch -o DIR writes them)")
            out.extend(found)
            continue
        if not path.is_file():
            raise InputError(f"{path}: no such patch file or directory")
        try:
            text = path.read_text(errors="replace")
        except OSError as e:
            raise InputError(f"{path}: cannot read: {e.strerror}") from None
        messages = split_mbox(text)
        if not messages:
            raise InputError(f"{path}: an mbox without any patch in it")
        if len(messages) == 1:
            out.append(path)  # a plain diff, or one mail (git format-patch -o): as it is
            continue
        d = workdir / hashlib.sha256(text.encode()).hexdigest()[:16]
        d.mkdir(parents=True, exist_ok=True)
        for i, msg in enumerate(messages, 1):
            f = d / f"{i:04d}-{_slug(subject(msg))}.patch"
            if not f.exists():
                f.write_text(msg)
            out.append(f)
    return out


def from_commits(tree: Path, commits: str, workdir: Path) -> "tuple[Path, List[Path]]":
    """A..B of a git work tree as (a clean export of A, the series A..B as patches), both
    cached under ``workdir`` by commit: the user's tree, its index and its checkout are
    not touched. Building the export unpatched gives A; with the series, B (incrementally,
    in the same build directory)."""
    import subprocess

    base, sep, tip = commits.partition("..")
    if not sep or not base or not tip:
        raise InputError(f"--commits {commits!r}: give a range BASE..TIP, e.g. v6.12..my-branch")

    def git(*args: str, **kw) -> subprocess.CompletedProcess:
        return subprocess.run(["git", "-C", str(tree), *args], capture_output=True, **kw)

    shas = []
    for ref in (base, tip):
        res = git("rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}", text=True)
        if res.returncode != 0:
            raise InputError(f"--commits {commits}: {ref!r} is not a commit of the git tree {tree}")
        shas.append(res.stdout.strip())
    export = workdir / "git" / shas[0]
    if not (export / ".tlbprobe-exported").exists():
        tmp = export.with_name(export.name + ".tmp")
        subprocess.run(["rm", "-rf", str(tmp)], check=True)
        tmp.mkdir(parents=True)
        archive = subprocess.Popen(["git", "-C", str(tree), "archive", "--format=tar", shas[0]],
                                   stdout=subprocess.PIPE)
        subprocess.run(["tar", "xf", "-", "-C", str(tmp)], stdin=archive.stdout, check=True)
        if archive.wait() != 0:
            raise InputError(f"git archive {shas[0]} failed in {tree}")
        (tmp / ".tlbprobe-exported").write_text(f"{tree} {shas[0]}\n")
        subprocess.run(["rm", "-rf", str(export)], check=True)
        tmp.rename(export)
    out = workdir / "series" / f"{shas[0][:16]}-{shas[1][:16]}"
    if not out.is_dir() or not any(out.glob("*.patch")):
        out.mkdir(parents=True, exist_ok=True)
        res = git("format-patch", "--no-stat", "--no-signature", "-o", str(out), f"{shas[0]}..{shas[1]}", text=True)
        if res.returncode != 0:
            raise InputError(f"git format-patch {commits} failed: {res.stderr.strip()}")
    patches = sorted(out.glob("*.patch"))
    if not patches:
        raise InputError(f"--commits {commits}: no commits between them")
    return export, patches
