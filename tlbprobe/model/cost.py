"""What the predicted broadcasts cost in time on another machine, projected from a run's
measured figures (collect --cost; `tlbprobe model --cost-from RUN`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping, Tuple

from ..errors import InputError
from ..rundir.sections import CostSection
from ..vocab import WORKLOAD_PHASE

if TYPE_CHECKING:
    from .predict import Prediction


@dataclass(frozen=True)
class CostProjection:
    """What the broadcasts of a prediction cost in time, from a run's measured figures
    (collect --cost): the receivers' CPU time adds up over the other CPUs; the initiator
    waits for the slowest target of each broadcast."""

    broadcasts: float
    other_cpus: int
    per_ipi_ns: float              # the receiver's handler per sync IPI, tracepoints subtracted
    wait_p50_ns: float             # the initiator's wait per broadcast, measured at measured_cpus
    wait_p99_ns: float
    measured_cpus: int
    receivers_ms: float
    initiator_ms_low: float        # every broadcast waits the measured median: a floor
    initiator_ms_likely: float     # the measured p99: the slowest of more targets is slower
    warnings: Tuple[str, ...]


def project_cost(pred: "Prediction", cost: "CostSection | Mapping[str, Any] | None", measured_cpus: int,
                 flush_mode: str, emulated: bool) -> CostProjection:
    """Project a run's measured cost figures (its summary.json ``cost``: ``run.section(CostSection)``,
    or the section's dict) onto ``pred``'s machine and operation count."""
    if isinstance(cost, Mapping):  # the section's dict form (tests, callers without a Run)
        cost = CostSection.from_dict("summary.json", cost) if cost else None
    if cost is None or cost.per_ipi_ns_corrected is None:
        raise InputError("the run has no handler time per sync IPI (collect it with --cost, on a kernel that "
                         "sends the broadcast)")
    broadcasts = pred.sync_broadcasts.value
    if broadcasts is None:
        raise InputError("the model has no single broadcast count for this scenario: give --variant and --flush-mode")
    ini = cost.figures(WORKLOAD_PHASE, "initiator")
    others = pred.scenario.online_cpus - 1
    per_ipi = float(cost.per_ipi_ns_corrected)
    p50, p99 = float(ini.p50_ns or 0.0), float(ini.p99_ns or 0.0)
    warnings = []
    if emulated:
        warnings.append("measured under TCG emulation: times are the emulator's, not a CPU's; do not quote them")
    elif flush_mode == "pv":
        warnings.append("measured in a paravirtual guest: interrupt delivery and VM exits cost more than on bare "
                        "metal; not transferable to bare metal")
    if measured_cpus != pred.scenario.online_cpus:
        warnings.append(f"measured on {measured_cpus} CPUs: the initiator's wait at {pred.scenario.online_cpus} is "
                        f"extrapolated (it waits for the slowest of {others} targets)")
    return CostProjection(broadcasts, others, per_ipi, p50, p99, measured_cpus,
                          receivers_ms=broadcasts * others * per_ipi / 1e6,
                          initiator_ms_low=broadcasts * p50 / 1e6, initiator_ms_likely=broadcasts * p99 / 1e6,
                          warnings=tuple(warnings))
