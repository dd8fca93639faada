"""gup-fast: the lock-less page-table walk's throughput, the other side of the trade.

The sync broadcast exists for GUP-fast (mm/gup.c, gup_fast()), which walks page tables
with interrupts off and no lock: a CPU inside such a walk cannot take the IPI, so
smp_call_function() returning proves that no walker still holds the old table. The
series' planned second step tracks which CPUs are inside a walk, so the sync goes only
to them; that bookkeeping sits on the walk's fast path, and its author reported ~3% from
early attempts, measured with a private benchmark. This workload is a public one.

The measured operation runs in a small C program (gupbench.c beside this file, compiled at the
start of the run): ``--threads`` threads of one process (one by default), each pinned
to a CPU, each pinning ``--pages-per-call`` 4 KiB pages of its own 2 MiB window per call,
``--calls`` times. ``--gup-path``:
* ``gup_test``: ioctl(PIN_FAST_BENCHMARK) on /sys/kernel/debug/gup_test (mm/gup_test.c,
  CONFIG_GUP_TEST, in kernels/config/tlbprobe-guest.config), pin_user_pages_fast() in
  the kernel's own loop and timed by the kernel: the purest figure;
* ``vmsplice``: vmsplice() into a pipe (iov_iter_get_pages2() -> get_user_pages_fast(),
  at most 16 pages a call) and splice() to /dev/null to drop the references: every
  kernel has it, the pipe's own work is included;
* ``odirect``: pread() of a file opened O_DIRECT (pin_user_pages_fast() through
  iov_iter_extract_pages()): the read itself dominates; the file lives in ``--odirect-dir``
  (a real filesystem: tmpfs has no O_DIRECT everywhere), the run records which;
* ``auto`` (default): gup_test when the kernel has it, else vmsplice.
``--backing 4k|2m``: each window in small pages (MADV_NOHUGEPAGE) or one huge page
(MADV_HUGEPAGE; the run records how much was huge).

Figures per repeat: calls per second and ns per pinned page, per thread and over all,
with the spread over repeats in the report. It sends no sync broadcast: the model
expects none. Our step-1 patch does not touch GUP-fast, so a baseline-vs-patched A/B of
this workload must come out unchanged: that is the control. In a TCG guest the times
are the emulator's: compare them within one A/B, quote a host's.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Dict, List, Optional

from ...cbuild import Program
from ...errors import PreflightError, WorkloadError
from ...measure.sysstate import SystemState
from ..base import PhaseOutcome, Progress, Workload
from .spec import SPEC, path_code

SOURCE = Path(__file__).with_name("gupbench.c")
DEBUGFS = Path("/sys/kernel/debug")
GUP_TEST = DEBUGFS / "gup_test"
WINDOW = 2 << 20


def parse_output(text: str) -> Dict[str, object]:
    """gupbench's lines -> {"threads": [{cpu, calls, pages, ns}], "huge_kb": n}; WorkloadError
    when it is not what gupbench prints."""
    threads: List[Dict[str, int]] = []
    huge = 0
    for line in text.splitlines():
        parts = line.split()
        try:
            if parts[:1] == ["thread"] and len(parts) == 10:
                threads.append({"cpu": int(parts[3]), "calls": int(parts[5]), "pages": int(parts[7]),
                                "ns": int(parts[9])})
            elif parts[:1] == ["huge"] and len(parts) == 2:
                huge = int(parts[1])
        except ValueError:
            raise WorkloadError(f"gupbench printed something unexpected: {line!r}") from None
    if not threads:
        raise WorkloadError(f"gupbench printed no thread figures: {text.strip()[-200:]!r}")
    return {"threads": threads, "huge_kb": huge}


class GupFastWorkload(Workload):
    spec = SPEC

    @classmethod
    def resolve(cls, job, facts):
        opts = dict(job.options)
        if opts.get("calls") is None:
            opts["calls"] = 2000 if opts["gup_path"] == "odirect" else 200_000
        return replace(job, threads=max(job.threads, 1), options=opts)

    def __init__(self, job, facts, log):
        super().__init__(job, facts, log)
        self.program: Optional[Program] = None
        self.path = self.opt("gup_path")
        self.file: Optional[str] = None
        self.fs = ""

    def planned_ops(self) -> int:
        return 0  # no broadcast to trace

    def describe(self) -> str:
        return (f"GUP-fast via {self.path}, {self.opt('backing')} pages, {self.opt('pages_per_call')} page(s) per "
                f"call, {self.job.threads} thread(s) x {self.opt('calls')} calls")

    def cpus(self) -> List[int]:
        """One CPU per thread: the driver's first, then the others in turn."""
        order = [self.job.cpu] + [c for c in self.facts.online_cpus if c != self.job.cpu]
        return [order[i % len(order)] for i in range(self.job.threads)]

    # -- per run --------------------------------------------------------------------------
    def preflight(self) -> None:
        if self.opt("gup_path") == "vmsplice" and self.opt("pages_per_call") > 16:
            raise PreflightError("--gup-path vmsplice pins at most 16 pages a call: give --pages-per-call 16 or less")
        if WINDOW // (self.opt("pages_per_call") * 4096) < 1:
            raise PreflightError("--pages-per-call is larger than a thread's 2 MiB window (512 pages)")

    def configure(self, state: SystemState) -> None:
        self.program = Program(SOURCE, flags=("-pthread",), what="the gup-fast workload")
        if self.path in ("auto", "gup_test") and not GUP_TEST.exists() and DEBUGFS.is_dir() \
                and not os.path.ismount(DEBUGFS):
            state.mount("debugfs", str(DEBUGFS))
        if self.path == "auto":
            self.path = "gup_test" if GUP_TEST.exists() else "vmsplice"
            self.log(f"gup-fast: {'the kernel has gup_test' if self.path == 'gup_test' else 'no gup_test (kernel without CONFIG_GUP_TEST)'}: pinning through {self.path}")
        elif self.path == "gup_test" and not GUP_TEST.exists():
            raise PreflightError(f"{GUP_TEST} is missing: the kernel has no CONFIG_GUP_TEST (use --gup-path vmsplice)")
        if self.path == "odirect":
            self._make_file()

    def _make_file(self) -> None:
        """The file O_DIRECT reads: one window's worth, written once, on a real filesystem."""
        d = Path(self.opt("odirect_dir"))
        if not d.is_dir():
            raise PreflightError(f"--odirect-dir {d} is not a directory")
        fd, name = tempfile.mkstemp(prefix="tlbprobe-gup-", dir=str(d))
        try:
            os.write(fd, os.urandom(WINDOW))
            os.fsync(fd)
        finally:
            os.close(fd)
        self.file = name
        self.fs = _filesystem(d)
        self.log(f"gup-fast: O_DIRECT reads of {name} ({self.fs})")
        if self.fs in ("tmpfs", "ramfs", "overlay"):
            self.log(f"warning: {d} is {self.fs}: O_DIRECT there may not pin through GUP at all")

    def run(self, progress: Progress, vmstat_before: Dict[str, int]) -> PhaseOutcome:
        assert self.program is not None
        cmd = [str(self.program.path), self.path, self.opt("backing"), str(self.opt("pages_per_call")),
               str(self.opt("calls")), ",".join(map(str, self.cpus()))] + ([self.file] if self.file else [])
        progress(f"gup-fast: {self.job.threads} thread(s) pinning through {self.path}")
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode != 0:
            raise WorkloadError(f"gupbench failed (exit {res.returncode}): {res.stderr.strip()[-300:]}")
        out = parse_output(res.stdout)
        threads = out["threads"]
        assert isinstance(threads, list)
        calls = sum(t["calls"] for t in threads)
        per_page = [t["ns"] / t["pages"] for t in threads if t["pages"]]
        per_s = [t["calls"] / (t["ns"] / 1e9) for t in threads if t["ns"]]
        window_kb = len(threads) * WINDOW // 1024
        figures = {
            "gup_path": path_code(self.path),
            "pages_per_call": float(self.opt("pages_per_call")),
            "threads": float(len(threads)),
            "calls_per_s": round(sum(per_s), 1),
            "calls_per_s_per_thread_min": round(min(per_s), 1) if per_s else 0.0,
            "calls_per_s_per_thread_max": round(max(per_s), 1) if per_s else 0.0,
            "ns_per_page": round(sum(per_page) / len(per_page), 2) if per_page else 0.0,
            "ns_per_page_max": round(max(per_page), 2) if per_page else 0.0,
            "huge_fraction": round(float(out["huge_kb"]) / window_kb, 3) if window_kb else 0.0,
        }
        note = ""
        if self.opt("backing") == "2m" and figures["huge_fraction"] < 1.0:
            note = f"only {figures['huge_fraction']:.0%} of the buffer was in huge pages (THP off or short of memory)"
        return PhaseOutcome(ops=calls, ops_expected=self.job.threads * self.opt("calls"), note=note, figures=figures)

    def close(self) -> None:
        """Run end: the compiled program and the O_DIRECT file go."""
        super().close()
        if self.program is not None:
            self.program.close()
            self.program = None
        if self.file:
            try:
                os.unlink(self.file)
            except FileNotFoundError:
                pass
            self.file = None


def _filesystem(d: Path) -> str:
    """The filesystem type of the mount that holds ``d`` (from /proc/self/mounts)."""
    best, fstype = "", "unknown"
    target = str(d.resolve())
    try:
        lines = Path("/proc/self/mounts").read_text().splitlines()
    except OSError:
        return fstype
    for line in lines:
        parts = line.split()
        if len(parts) >= 3 and (target == parts[1] or target.startswith(parts[1].rstrip("/") + "/")) \
                and len(parts[1]) >= len(best):
            best, fstype = parts[1], parts[2]
    return fstype
