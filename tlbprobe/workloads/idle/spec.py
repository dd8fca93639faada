"""idle: no operation at all, only the idle control window of every repeat.

The background a host has without any workload: what every other run subtracts. The
model expects nothing (analysis/model.yaml ``idle``, whose ``workloads:`` names it), no
TLB shootdown either.
"""

from __future__ import annotations

from ..spec import WorkloadSpec


class IdleSpec(WorkloadSpec):
    def tlb_ipis(self, s, params, notes):
        """No operation, no flush: the idle rule's 0."""
        r = params.rule("idle")  # the rule of the same name
        return 0.0, 0.0, (r.id,), r.text

    def model_what(self, s) -> str:
        return "idle window"


SPEC = IdleSpec(
    name="idle",
    description="no operation: the idle control windows alone, the host's background",
    driver="tlbprobe.workloads.idle.driver:IdleWorkload",
    has_workload_phase=False,
    order=3,
)
