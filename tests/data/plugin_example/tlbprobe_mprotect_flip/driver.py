"""The mprotect-flip driver: what `tlbprobe collect --workload mprotect-flip` runs, as root.

prepare() maps the range and faults it in as small pages (outside the measured window);
run() flips every 2 MiB range read-only and back, ``passes`` times; cleanup() unmaps it.
"""

from dataclasses import replace

from tlbprobe.errors import PreflightError
from tlbprobe.units import format_size
from tlbprobe.workloads import PhaseOutcome, Workload, libc

from .spec import DEFAULT_SIZE, RANGE, SPEC


class MprotectFlipWorkload(Workload):
    spec = SPEC

    @classmethod
    def resolve(cls, job, facts):
        """The size made explicit (run.yaml records it)."""
        return job if job.size else replace(job, size=DEFAULT_SIZE)

    def __init__(self, job, facts, log):
        super().__init__(job, facts, log)
        self.size = job.size // RANGE * RANGE
        self.base = None
        self.addr = 0

    def planned_ops(self) -> int:
        return self.size // RANGE * self.opt("passes")

    def describe(self) -> str:
        return f"mprotect of {format_size(self.size)} read-only and back, {self.opt('passes')} pass(es)"

    def preflight(self) -> None:
        if self.size < RANGE:
            raise PreflightError("--size must be at least 2M")
        if 2 * self.size > self.facts.mem_available:
            raise PreflightError(f"--size {format_size(self.size)} is more than half of MemAvailable")

    def prepare(self) -> None:
        self.base, self.addr = libc.map_small_pages(self.size, RANGE)

    def run(self, progress, vmstat_before):
        flips = 0
        for _ in range(self.opt("passes")):
            for off in range(0, self.size, RANGE):
                libc.mprotect(self.addr + off, RANGE, libc.PROT_READ)
                libc.mprotect(self.addr + off, RANGE, libc.PROT_READ | libc.PROT_WRITE)
                flips += 1
        return PhaseOutcome(ops=flips, ops_expected=self.planned_ops())

    def cleanup(self) -> None:
        if self.base is not None:
            libc.munmap(self.base, self.size + RANGE)
            self.base = None
