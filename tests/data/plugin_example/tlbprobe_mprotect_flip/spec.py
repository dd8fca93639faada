"""mprotect-flip: each 2 MiB range of a private anonymous mapping made read-only and back.

mprotect() (mm/mprotect.c change_protection()) rewrites the PTEs and flushes the TLB of
the CPUs in the mm's cpumask; it frees no page table, so it never has to wait for a
lock-less GUP-fast walker: no tlb_remove_table_sync_one(), no sync broadcast. A control
to run beside a trigger, and the smallest workload tlbprobe knows from outside its tree.

What tlbprobe takes from here: the name, the driver to import when a collect runs it, what
one operation is called, the options (job keys and --flags), how many operations a size
makes (`tlbprobe model --size`), the model's rule (this package cannot add one to
tlbprobe's analysis/model.yaml, so the spec brings it) and the report's workload line.
Everything else has the default of tlbprobe/workloads/spec.py: the TLB shootdowns follow
mm_cpumask, one flush per operation.
"""

from tlbprobe.model.rules import Rule
from tlbprobe.workloads import Option, WorkloadSpec
from tlbprobe.workloads.spec import size_text

RANGE = 2 << 20          # one operation: a 2 MiB range, read-only and back
DEFAULT_SIZE = 64 << 20


class MprotectFlipSpec(WorkloadSpec):
    def ops_from_size(self, size: int) -> int:
        return size // RANGE

    def report_what(self, run, s) -> str:
        return f"mprotect read-only and back of {size_text(run)}, {run.job.get('passes')} pass(es)"


SPEC = MprotectFlipSpec(
    name="mprotect-flip",
    description="mprotect() each 2 MiB range read-only and back: no page table freed, no sync broadcast",
    driver="tlbprobe_mprotect_flip.driver:MprotectFlipWorkload",
    ops_unit="flips",
    default_ops=DEFAULT_SIZE // RANGE,
    options=(
        Option("passes", "mprotect-flip: passes over the range per repeat (default 1)", kind=int, default=1, low=1,
               high=1000, metavar="N"),
    ),
    rules=(
        Rule(id="mprotect-flip-none", function="change_protection", file="mm/mprotect.c", since="always",
             per_op=0, workloads=("mprotect-flip",),
             text="mprotect() rewrites PTEs and flushes the TLB; it frees no page table: no sync broadcast"),
    ),
)
