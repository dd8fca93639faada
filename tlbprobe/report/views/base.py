"""What a view is: the part of a report (and of collect's end-of-run summary) that one
observer's section of summary.json contributes. tlbprobe/report/views/__init__.py lists
the views; this module is the interface they share."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Dict, List, Mapping, NamedTuple, Optional, Protocol, Tuple, Type

from ...rundir.sections import Section
from ...vocab import FIGURE_KINDS

if TYPE_CHECKING:
    from ...rundir.reader import Run


class Analysed(Protocol):
    """What a view reads of a run's analysis (report/analyze.py RunAnalysis): the run and
    its letter. A protocol, so that the views, which the analysis itself asks for the
    observers' figures, need not import it back."""

    run: "Run"

    @property
    def label(self) -> str: ...

class Figure(NamedTuple):
    """A row of the comparison table, as report/compare.py FIGURES: the per-repeat key,
    the row's label, its unit, its decimals, and what it is (vocab.py FIGURE_KINDS: an
    exact count, a noisy count, a rate or a time), which decides whether it is tested,
    how it is written and whether emulation voids it."""

    key: str
    label: str
    unit: str
    digits: int
    kind: str

    def checked(self) -> "Figure":
        if self.kind not in FIGURE_KINDS:
            raise ValueError(f"figure {self.key}: kind {self.kind!r} is none of {', '.join(FIGURE_KINDS)}")
        return self


@dataclass(frozen=True)
class Table:
    """A table of a run's details (cyclictest per CPU): the text report prints the title
    and the columns, the HTML report the columns."""

    title: str
    headers: Tuple[str, ...]
    rows: List[Tuple[str, ...]]
    align: str


class View:
    """One observer's share of the report. Every method has a default that shows nothing,
    so a view says only what its observer contributes:

    * ``lines(a)``: lines among a run's facts (text, Markdown, HTML; the LKML report's
      field named after ``label``), under the row name ``label``; ``note``, what the
      figures cannot see, is said once after the lines of every view;
    * ``table(a)``: a table of the run's details (text and HTML reports);
    * ``figures`` and ``per_repeat(run)``: rows of the A/B comparison, one value per repeat;
    * ``json(a)``: keys of the run's object in the JSON report, placed with the run's
      measured figures (``json_slot = "figures"``) or after its per-CPU table ("detail");
    * ``summary_lines(summary)``: lines of collect's end-of-run summary, from the
      summary.json object the collector just wrote;
    * ``ab_table(a, b)``: a table of the A/B comparison beside its figures (text and
      LKML reports), e.g. the check's per caller.
    """

    section: ClassVar[Type[Section]]
    label: ClassVar[str] = ""
    note: ClassVar[Optional[str]] = None
    figures: ClassVar[Tuple[Figure, ...]] = ()
    json_slot: ClassVar[str] = "figures"

    def lines(self, a: "Analysed") -> List[str]:
        return []

    def table(self, a: "Analysed") -> Optional[Table]:
        return None

    def per_repeat(self, run: "Run") -> Dict[str, List[float]]:
        return {}

    def json(self, a: "Analysed") -> Dict[str, Any]:
        """The section as summary.json holds it, under its key; nothing without it."""
        sec = a.run.section(self.section)
        return {} if sec is None else {self.section.KEY: sec.to_dict()}

    def summary_lines(self, summary: Mapping[str, Any]) -> List[str]:
        return []

    def ab_table(self, a: "Analysed", b: "Analysed") -> Optional[Table]:
        return None
