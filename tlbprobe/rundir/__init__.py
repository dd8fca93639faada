"""The run directory: its schema (schema.py), the writer the collector uses (writer.py),
the reader the report uses (reader.py) and the parser of cyclictest's files in it
(cyclictest.py), which both use. doc/run-format.md describes the files."""

from .schema import (ATTRIBUTION_COLUMNS, COST_COLUMNS, VICTIM_COLUMNS, FORMAT, INTERRUPTS_COLUMNS, PHASES_COLUMNS, TIMESERIES_COLUMNS,
                     VMSTAT_COLUMNS, PhaseFigures, RepeatFigures, run_totals, sync_count)
from .writer import RunDir, atomic_write, read_summary

__all__ = ["ATTRIBUTION_COLUMNS", "COST_COLUMNS", "VICTIM_COLUMNS", "FORMAT", "INTERRUPTS_COLUMNS", "PHASES_COLUMNS", "TIMESERIES_COLUMNS",
           "VMSTAT_COLUMNS", "PhaseFigures", "RepeatFigures", "RunDir", "atomic_write", "read_summary",
           "run_totals", "sync_count"]
