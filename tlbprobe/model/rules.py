"""The model's parameters: its rules, as analysis/model.yaml writes them, and the verdict's
tolerance.

Every number the model gives comes from a rule, and every rule mirrors a kernel function
(the YAML names it, with the commit that introduced the behaviour). A workload from
another package, which cannot add to analysis/model.yaml, brings its rules in its spec
(``WorkloadSpec.rules``); the engine adds them where the file has no rule of that id
(tlbprobe/model/predict.py ``with_workload_rules``).

Pure: this module reads one YAML file and imports nothing of tlbprobe beyond the
foundation; a plug-in's spec imports it for :class:`Rule`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Tuple

from ..datafiles import locate
from ..errors import InputError
from ..vocab import HUGETLB_ERAS

DEFAULT_PARAMS_PATH = locate("analysis", "model.yaml")


@dataclass(frozen=True)
class Rule:
    """One rule of the model, as written in analysis/model.yaml."""

    id: str
    function: str
    file: str
    since: str
    text: str
    per_op: Optional[float] = None
    per_table: Optional[float] = None
    per_op_per_mm_cpu: Optional[float] = None
    skips_when_flush_mode: Tuple[str, ...] = ()
    #: workloads whose broadcasts this rule counts, ``per_op`` per operation (model.yaml
    #: ``workloads:``): a new workload that syncs once per operation is one entry here
    workloads: Tuple[str, ...] = ()

    def cite(self) -> str:
        """'function (file)' for one-line citations."""
        return f"{self.function}() ({self.file})" if self.function != "none" else self.text


@dataclass(frozen=True)
class Tolerance:
    """How far measured may be from expected before the verdict says 'does not match'."""

    sigma: float = 3.0
    relative: float = 0.02
    absolute: float = 3.0
    noisy_fraction: float = 0.25


@dataclass(frozen=True)
class ModelParams:
    rules: Mapping[str, Rule]
    default_hugetlb_unshare: str = "batched"
    verdict: Tolerance = Tolerance()
    source: str = "built-in"

    def rule(self, rule_id: str) -> Rule:
        try:
            return self.rules[rule_id]
        except KeyError:
            raise InputError(f"{self.source}: the model needs rule {rule_id!r}, which is missing") from None


#: The rules the engine itself applies, whatever the workload (tlbprobe/model/predict.py):
#: the fan-out, the patch's skip and the TLB-shootdown rules. A workload's own rules are
#: looked up when it is predicted (ModelParams.rule names the file when one is missing).
REQUIRED_RULES = (
    "sync-fanout",
    "patched-skip",
    "tlb-native",
    "tlb-pv",
    "tlb-invlpgb",
)


def load_params(path: Optional[Path] = None) -> ModelParams:
    """Read the model's parameters from YAML (analysis/model.yaml unless ``path`` is given).

    Raises InputError naming the file when it is missing or malformed, so a typo in the
    parameters never silently turns into a wrong prediction.
    """
    import yaml  # imported here so `tlbprobe --help` stays fast

    from .. import files

    p = Path(path) if path else DEFAULT_PARAMS_PATH
    try:
        data = yaml.safe_load(files.read_text(p, "model parameters", files.cap("model parameters")))
    except files.MissingFile:
        raise InputError(f"{p}: model parameters not found (pass --params FILE)") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise InputError(f"{p}{where}: not valid YAML: {problem}") from None
    if not isinstance(data, dict) or data.get("format") != "tlbprobe-model/1":
        raise InputError(f"{p}: not a tlbprobe model file (expected 'format: tlbprobe-model/1')")
    raw_rules = data.get("rules")
    if not isinstance(raw_rules, dict):
        raise InputError(f"{p}: 'rules' must be a mapping of rule id to rule")
    rules: Dict[str, Rule] = {}
    for rid, r in raw_rules.items():
        if not isinstance(r, dict):
            raise InputError(f"{p}: rule {rid!r} must be a mapping")
        missing = [k for k in ("function", "file", "since", "text") if k not in r]
        if missing:
            raise InputError(f"{p}: rule {rid!r} lacks {', '.join(missing)}")
        try:
            rules[rid] = Rule(
                id=str(rid),
                function=str(r["function"]),
                file=str(r["file"]),
                since=str(r["since"]),
                text=str(r["text"]),
                per_op=_opt_float(r.get("per_op")),
                per_table=_opt_float(r.get("per_table")),
                per_op_per_mm_cpu=_opt_float(r.get("per_op_per_mm_cpu")),
                skips_when_flush_mode=tuple(r.get("skips_when_flush_mode") or ()),
                workloads=tuple(str(w) for w in (r.get("workloads") or ())),
            )
        except (TypeError, ValueError) as e:
            raise InputError(f"{p}: rule {rid!r}: {e}") from None
    for rid in REQUIRED_RULES:
        if rid not in rules:
            raise InputError(f"{p}: rule {rid!r} is missing")
    era = data.get("default_hugetlb_unshare", "batched")
    if era not in HUGETLB_ERAS:
        raise InputError(f"{p}: default_hugetlb_unshare must be one of {', '.join(HUGETLB_ERAS)}")
    v = data.get("verdict") or {}
    try:
        tol = Tolerance(**{k: float(v[k]) for k in ("sigma", "relative", "absolute", "noisy_fraction") if k in v})
    except (TypeError, ValueError) as e:
        raise InputError(f"{p}: verdict: {e}") from None
    return ModelParams(rules=rules, default_hugetlb_unshare=era, verdict=tol, source=str(p))


def _opt_float(v: Any) -> Optional[float]:
    return None if v is None else float(v)
