"""The reference model: how many sync broadcasts and IPIs a page-table operation should cost.

Three parts, one subject each:

* rules.py: the parameters, read from ``analysis/model.yaml`` (:class:`Rule`,
  :class:`Tolerance`, :class:`ModelParams`, :func:`load_params`). Every rule mirrors a
  kernel function: the YAML names it, with the commit that introduced the behaviour.
* scenario.py and predict.py: the engine, a :class:`Scenario` in, a :class:`Prediction`
  out (:func:`predict`). It names no workload: what differs between workloads it asks
  of the workload's spec (tlbprobe/workloads/spec.py).
* cost.py: the projection of a run's measured cost onto another machine
  (:func:`project_cost`).

Pure: parameters are passed in explicitly, no global state. The built-in workloads' specs
import nothing of this package, so `tlbprobe collect --help` does not load it.
"""

from __future__ import annotations

from ..vocab import FLUSH_MODES, HUGETLB_ERAS
from ..vocab import HUGETLB_OPERATIONS as UNSHARE_KINDS
from ..vocab import KERNEL_VARIANTS as VARIANTS
from .cost import CostProjection, project_cost
from .predict import Figure, Prediction, ops_from_size, per_op_rule, predict, with_workload_rules
from .rules import DEFAULT_PARAMS_PATH, REQUIRED_RULES, ModelParams, Rule, Tolerance, load_params
from .scenario import Scenario, tables_from_size

__all__ = [
    "DEFAULT_PARAMS_PATH", "FLUSH_MODES", "HUGETLB_ERAS", "REQUIRED_RULES", "UNSHARE_KINDS", "VARIANTS",
    "CostProjection", "Figure", "ModelParams", "Prediction", "Rule", "Scenario", "Tolerance", "load_params",
    "ops_from_size", "per_op_rule", "predict", "project_cost", "tables_from_size", "with_workload_rules",
]
