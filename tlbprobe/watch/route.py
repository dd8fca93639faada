"""What this kernel lets the watch count, decided once at start and said once.

Three questions, from the running kernel's tracefs and symbols:

1. Is there an exact count? It needs the csd:csd_queue_cpu event (kernel/smp.c, Linux
   6.5, commit bf5a8c26ad7c; Debian 12's own 6.1 lacks it) and the address of the sync
   handler tlb_remove_table_smp_sync (mm/mmu_gather.c:264) in /proc/kallsyms, visible
   to root unless kptr_restrict is 2. A kernel without that symbol never sends the
   broadcast (it is compiled only with CONFIG_MMU_GATHER_RCU_TABLE_FREE: x86 with
   PARAVIRT in 6.12, every arm64): the watch says so and counts zero.
2. Where do the stacks come from? A hist trigger keyed by stack (CONFIG_HIST_TRIGGERS,
   ``hist`` among the event's available triggers: hist.py), else the ``stacktrace``
   trigger (CONFIG_STACKTRACE: stacks.py), else none: every broadcast is then counted
   and reported as unattributed.
3. Neither the event nor the symbol: CAL and TLB per CPU only, said plainly in the
   output and the records, without a sync count (CAL minus TLB bounds it from above).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Tuple

from ..measure.perfcount import kernel_addresses
from ..vocab import SYNC_FUNCTION
from .stacks import EVENT_DIR

HIST = "hist-trigger"
STACKTRACE = "stacktrace-trigger"
NONE = "none"
CAL_ONLY = "cal-only"
#: --stacks choices -> the routes they allow
STACK_CHOICES = {"auto": (HIST, STACKTRACE), "hist": (HIST,), "trigger": (STACKTRACE,), "none": ()}


@dataclass(frozen=True)
class Route:
    """How this watch counts: ``stacks`` is one of HIST, STACKTRACE, NONE (exact count
    without origins) or CAL_ONLY (no exact count); ``why`` is the sentence the output
    and watch.yaml carry."""

    stacks: str
    why: str
    address: Optional[int] = None
    #: the kernel never sends the broadcast (no sync handler compiled in)
    never_sends: bool = False

    @property
    def exact(self) -> bool:
        return self.stacks != CAL_ONLY


def available_triggers(tracefs: Path) -> Tuple[str, ...]:
    """The event's '# Available triggers:' line (kernel/trace/trace_events_trigger.c
    trigger_show()): e.g. ('traceon', 'traceoff', 'stacktrace', 'enable_event', 'hist')."""
    try:
        text = (tracefs / EVENT_DIR / "trigger").read_text()
    except OSError:
        return ()
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("# Available triggers:") and i + 1 < len(lines):
            return tuple(lines[i + 1].lstrip("# ").split())
    return ()


def detect(tracefs: Path, wanted: str = "auto", kallsyms: str = "/proc/kallsyms") -> Route:
    if not (tracefs / EVENT_DIR).is_dir():
        return Route(CAL_ONLY, "this kernel has no csd:csd_queue_cpu trace event (Linux 6.5+): counting CAL and "
                               "TLB per CPU only, with no exact broadcast count and no origins (CAL minus TLB "
                               "bounds the sync IPIs from above)")
    address = kernel_addresses([SYNC_FUNCTION], kallsyms).get(SYNC_FUNCTION)
    if address is None:
        return Route(NONE, f"this kernel has no {SYNC_FUNCTION} (built without MMU_GATHER_RCU_TABLE_FREE): it "
                           f"never sends the sync broadcast; counting CAL and TLB per CPU", never_sends=True)
    if not address:
        return Route(CAL_ONLY, f"{SYNC_FUNCTION}'s address is hidden (kernel.kptr_restrict=2): no exact count; "
                               f"counting CAL and TLB per CPU only")
    triggers = available_triggers(tracefs)
    allowed = STACK_CHOICES[wanted]
    if HIST in allowed and "hist" in triggers:
        return Route(HIST, "exact count (perf counter on csd:csd_queue_cpu); origins from a hist trigger keyed "
                           "by stack", address)
    if STACKTRACE in allowed and "stacktrace" in triggers:
        why = "exact count (perf counter on csd:csd_queue_cpu); origins from the stacktrace trigger"
        if wanted == "auto":
            why += " (this kernel has no hist triggers)"
        return Route(STACKTRACE, why, address)
    if wanted == "none":
        return Route(NONE, "exact count (perf counter on csd:csd_queue_cpu); origins not traced (--stacks none): "
                           "every broadcast is unattributed", address)
    missing = {"hist": "hist triggers (CONFIG_HIST_TRIGGERS)", "trigger": "the stacktrace trigger"}.get(
        wanted, "hist triggers or the stacktrace trigger (CONFIG_STACKTRACE)")
    return Route(NONE, f"exact count (perf counter on csd:csd_queue_cpu), but this kernel offers no {missing}: "
                       f"every broadcast is counted as unattributed", address)
