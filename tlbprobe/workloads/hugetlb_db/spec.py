"""hugetlb-db: servers keep a shared hugetlb segment mapped while client sessions attach and exit.

Every client exit unshares (huge_pmd_unshare()). With the batched unshare (8ce720d5bd91,
analysis/model.yaml hugetlb-unshare-batched) an exit sends the broadcast only when it
leaves the tables exclusive, i.e. to one server with no other client attached: while two
or more servers map the segment, client churn sends none. ``--sharers 1`` is the positive
control; the driver counts the exits that left the tables exclusive (``exclusive_exits``),
which is what the model predicts from. On a per-table kernel every exit syncs, for every
table it shared.
"""

from __future__ import annotations

from dataclasses import replace
from typing import List

from ...errors import InputError
from ...ui.numbers import fmt_num
from ...options import Option
from ...vocab import PUD_SIZE
from ..spec import WorkloadSpec, median, plain, size_text, total, whole_ranges

CLIENT_TOUCH = ("all", "part")


def db_exclusive_exits(sessions: int, rate: float, work_ms: float) -> int:
    """hugetlb-db with one server, sessions started every 1/rate s and attached work_ms
    each: an exit leaves the tables exclusive when no other client is attached. On that
    even schedule, either each session ends before the next starts (every exit does), or
    each next one starts before the last ends (only the final exit does). A real run's
    timing jitters, which is why a run's own count (exclusive_exits) is what the report
    predicts from."""
    if sessions <= 0:
        return 0
    return sessions if work_ms / 1000.0 < 1.0 / rate else 1


class HugetlbDbSpec(WorkloadSpec):
    def ops_from_size(self, size: int) -> int:
        """The size gives the segment's tables, not sessions: one. A segment shares whole
        1 GiB PMD tables (PUD_SIZE), as the driver requires of --size."""
        whole_ranges(size, "shared PMD table", PUD_SIZE)
        return 1

    def validate(self, s):
        if s.sharers < 1:
            raise InputError(f"servers (--sharers) must be at least 1, got {s.sharers}")
        return replace(s, unshare_kind=None)

    def broadcasts(self, s, params, notes: List[str]):
        """``ops`` client sessions exit from a segment ``sharers`` servers keep mapped.
        Batched unshare: a broadcast only for an exit that leaves the tables exclusive
        (``exclusive_ops``, counted by the driver: with one server and no other client
        attached); per-table: every exit, for every table it shared."""
        era = s.hugetlb_unshare or params.default_hugetlb_unshare
        if era == "batched":
            r = params.rule("hugetlb-unshare-batched")
            per = r.per_op if r.per_op is not None else 1.0
            if s.exclusive_ops is not None:
                n = s.exclusive_ops
                why = f"{plain(n)} of {plain(s.ops)} client exits left the tables to one server alone"
            elif s.sharers == 1:
                n = s.ops
                why = f"{plain(n)} client exits, each leaving the tables to the one server (sessions not overlapping)"
            else:
                n = 0
                why = f"{s.sharers} servers keep the tables shared: no client exit leaves them exclusive"
            if s.sharers > 1:
                notes.append("0 expected: evidence only with the sharing shown (sessions_shared) and a positive "
                             "control (--sharers 1) that sends one broadcast per session")
            return n * per, (r.id,), f"{why}: {r.text}"
        if era == "per-table":
            r = params.rule("hugetlb-unshare-per-table")
            per = r.per_table if r.per_table is not None else 1.0
            return (s.ops * s.tables_per_op * per, (r.id,),
                    f"{plain(s.ops)} client exits x {s.tables_per_op} table{'s' if s.tables_per_op != 1 else ''}: "
                    f"{r.text}")
        r = params.rule("hugetlb-unshare-none")
        return 0.0, (r.id,), r.text

    def scenario_from_flags(self, s, flags):
        """--rate with --client-work-ms: how many exits leave the tables exclusive."""
        rate, work = flags.get("rate"), flags.get("client_work_ms")
        if rate is None and work is None:
            return s
        if rate is None or work is None or rate <= 0 or work < 0:
            raise InputError("hugetlb-db: give --rate (> 0) and --client-work-ms (>= 0) together")
        return replace(s, exclusive_ops=db_exclusive_exits(s.ops, rate, work) if flags["sharers"] == 1 else 0)

    def model_what(self, s) -> str:
        return (f"hugetlb-db: {s.ops} client session{'s' if s.ops != 1 else ''} on a segment of "
                f"{s.tables_per_op} PMD table{'s' if s.tables_per_op != 1 else ''}, {s.sharers} server(s)")

    def scenario_from_run(self, run, s):
        """The servers, and the exits the driver saw leave the tables exclusive."""
        sharers = run.job.get("sharers")
        exclusive = [r.workload.workload_figures.get("exclusive_exits") for r in run.repeats if r.workload]
        return replace(s, sharers=sharers if isinstance(sharers, int) and sharers >= 1 else 2,
                       control=run.job.get("control") is True,
                       exclusive_ops=int(sum(exclusive)) if exclusive and all(x is not None for x in exclusive)
                       else None)

    def report_what(self, run, s) -> str:
        return (f"hugetlb-db: client sessions on a {size_text(run)} segment ({s.tables_per_op} PMD "
                f"table{'s' if s.tables_per_op != 1 else ''}) kept by {s.sharers} server{'s' if s.sharers != 1 else ''}")

    def figures_line(self, figs, run, s, race):
        return (f"{fmt_num(total(figs, 'sessions'))} sessions at {fmt_num(median(figs, 'sessions_per_s'), 1)}/s, "
                f"{fmt_num(total(figs, 'sessions_shared'))} of them shared the servers' tables (sharing shown by "
                f"their faults), {fmt_num(total(figs, 'exclusive_exits'))} exits left the tables to one server "
                f"alone, at most {fmt_num(max(f.get('max_attached', 0.0) for f in figs))} clients attached at once"
                + (f"; {race}" if race else ""))


SPEC = HugetlbDbSpec(
    name="hugetlb-db",
    description="a database's shared hugetlb segment: servers keep it mapped, client sessions attach and exit",
    driver="tlbprobe.workloads.hugetlb_db.driver:HugetlbDbWorkload",
    tlb_unmodelled="tlb-hugetlb",  # exit flushes the client's mm: not modelled beyond one CPU
    ops_unit="sessions",
    order=5,
    options=(
        Option("sharers", "long-lived server processes mapping the segment (default: 4; 1 is the "
               "positive control)", kind=int, default=4, low=1, high=64, metavar="N"),
        Option("rate", "client sessions started per second (default: 20)", kind=int, default=20, low=1, high=1000,
               metavar="R"),
        Option("duration", "seconds of client churn per repeat (default: 5)", kind=int, default=5, low=1,
               high=3600, metavar="S"),
        Option("client_work_ms", "how long a client stays attached, ms (default: 10; longer than 1000/rate makes "
               "sessions overlap)", kind=int, default=10, low=0, high=600000, metavar="MS"),
        Option("client_touch", "what a client faults: all (the whole segment) or part (a few huge pages of each "
               "GiB)", choices=CLIENT_TOUCH, default="all"),
        Option("race", "GUP-fast walker threads inside each server, on the other CPUs, walk the segment while "
               "clients attach and exit; the segment's pattern and the kernel log are checked", flag=True,
               default=False),
    ),
    model_flags=(
        Option("sharers", "the servers that keep the segment mapped while clients come and go", kind=int, default=2,
               metavar="N"),
        Option("rate", "hugetlb-db: client sessions per second (with --client-work-ms: whether sessions overlap)",
               kind=float, metavar="R"),
        Option("client_work_ms", "hugetlb-db: how long each client stays attached; sessions that overlap leave the "
               "tables exclusive only at the last exit of a run of overlapping ones", kind=float, metavar="MS"),
    ),
)
