"""The model's input: what was (or will be) run, one record for every workload.

A workload's spec (tlbprobe/workloads/<name>/spec.py) says how a Scenario is made from a
recorded run (``scenario_from_run``) or from `tlbprobe model`'s flags
(``scenario_from_flags``), and checks the fields only it uses (``validate``, applied by
predict.py after :meth:`Scenario.checked`). This module knows no workload: the specs
import it, not the other way round.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Optional

from .. import arch as arches
from ..errors import InputError
from ..vocab import FLUSH_MODES, HUGETLB_ERAS, KERNEL_VARIANTS, PUD_SIZE


@dataclass(frozen=True)
class Scenario:
    """What was (or will be) run: the model's inputs.

    ``ops`` counts operations: collapsed PMDs, or unsharing calls (munmap, mprotect, ...).
    ``mm_cpus`` counts CPUs that run the process's mm (the driver plus its threads).
    Hugetlb: ``sharers`` processes map the range (one holds it, the others unshare in
    turn, as the hugetlb workload does), ``control`` means a MAP_PRIVATE mapping that
    cannot share.
    ``variant`` None and ``flush_mode`` "unknown" are allowed: the model then answers
    only where the answer does not depend on them.
    """

    workload: str
    ops: int
    online_cpus: int
    mm_cpus: int = 1
    variant: Optional[str] = "baseline"
    flush_mode: str = "native"
    unshare_kind: Optional[str] = None
    tables_per_op: int = 1
    hugetlb_unshare: Optional[str] = None
    sharers: int = 2
    control: bool = False
    #: hugetlb-db: client exits that left the tables exclusive, as the driver counted them
    exclusive_ops: Optional[int] = None

    def checked(self) -> "Scenario":
        """A normalised copy; InputError for anything the model cannot reason about in
        any workload. The fields only one workload uses are its spec's to check
        (WorkloadSpec.validate, which predict.py applies next)."""
        if self.flush_mode not in FLUSH_MODES:
            raise InputError(f"unknown flush mode {self.flush_mode!r}: use one of {', '.join(FLUSH_MODES)}")
        if self.variant is not None and self.variant not in KERNEL_VARIANTS:
            raise InputError(f"unknown kernel variant {self.variant!r}: use baseline or patched")
        if int(self.online_cpus) < 1:
            raise InputError(f"online CPUs must be at least 1, got {self.online_cpus}")
        biggest = cpu_limit(self.flush_mode)
        if int(self.online_cpus) > biggest.nr_cpus_max:
            raise InputError(f"{self.online_cpus} online CPUs: no {biggest.name} kernel runs more than "
                             f"{biggest.nr_cpus_max} (NR_CPUS at its maximum: {biggest.nr_cpus_source})")
        if int(self.ops) < 0:
            raise InputError(f"operation count must not be negative, got {self.ops}")
        if not 1 <= int(self.mm_cpus) <= int(self.online_cpus):
            raise InputError(
                f"CPUs running the mm ({self.mm_cpus}) must be between 1 and the online CPUs ({self.online_cpus})"
            )
        if int(self.tables_per_op) < 1:
            raise InputError(f"PMD tables per operation must be at least 1, got {self.tables_per_op}")
        if self.hugetlb_unshare is not None and self.hugetlb_unshare not in HUGETLB_ERAS:
            raise InputError(f"unknown hugetlb unshare behaviour {self.hugetlb_unshare!r}: use {', '.join(HUGETLB_ERAS)}")
        return replace(
            self,
            ops=int(self.ops),
            online_cpus=int(self.online_cpus),
            mm_cpus=int(self.mm_cpus),
            tables_per_op=int(self.tables_per_op),
            sharers=int(self.sharers),
            control=bool(self.control),
            exclusive_ops=None if self.exclusive_ops is None else int(self.exclusive_ops),
        )


def cpu_limit(flush_mode: str) -> arches.Arch:
    """The architecture whose kernels run the most CPUs among those that can have this
    flush mode (native: x86_64; tlbi-broadcast: arm64): the scenario's CPU count is
    checked against its NR_CPUS maximum (tlbprobe/arch/)."""
    able = [a for a in arches.registry().values() if flush_mode in a.flush.modes]
    return max(able or arches.registry().values(), key=lambda a: a.nr_cpus_max)


def tables_from_size(size: int) -> int:
    """Shared PMD tables a hugetlb mapping of ``size`` bytes uses: one per 1 GiB (PUD_SIZE)."""
    return max(1, size // PUD_SIZE)
