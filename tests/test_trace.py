"""The trace parser on a recorded trace: what the kernel queued against what arrived."""

from __future__ import annotations

from pathlib import Path

from tlbprobe.trace import PhaseCounts, TraceSession, parse_event, parse_hex_cpumask

DATA = Path(__file__).parent / "data"


def session_over(tmp_path: Path, text: str) -> TraceSession:
    """A TraceSession whose trace_pipe is a file holding ``text`` (drained once)."""
    (tmp_path / "trace_pipe").write_text(text)
    s = TraceSession(tmp_path)
    s.enabled = ["csd/csd_function_entry", "csd/csd_queue_cpu", "ipi/ipi_send_cpu"]
    s.drain()
    (tmp_path / "trace_pipe").write_text("")
    return s


def test_recorded_trace_counts_queued_received_and_polled_calls(tmp_path):
    s = session_over(tmp_path, (DATA / "trace-6.18-collapse-polling.txt").read_text())
    assert s.unparsed == 0
    c = s.counts("r0-workload")
    # six sync calls queued for CPU 1; the first found it polling in idle: no IPI, no entry
    assert c.queued([1]) == {"tlb_remove_table_smp_sync": 6, "flush_tlb_func": 1}
    assert c.received([1]) == {"tlb_remove_table_smp_sync": 5, "flush_tlb_func": 1, "sched_ttwu_pending": 1}
    assert c.woken_without_ipi([1]) == 1 and c.woken_without_ipi([0]) == 0
    ipis = sum(n for (ev, func, site, cpu), n in c.counts.items()
               if ev == "ipi_send_cpu" and cpu == 1 and site == "smp_call_function")
    assert ipis == 5
    # the wake-up queued for CPU 0 by a kworker is CPU 0's, not a call to the other CPUs
    assert c.queued([0]) == {"sched_ttwu_pending": 1}
    assert c.queue_traced and c.lost == 0


def test_queue_counts_are_marked_untraced_when_the_event_was_not_enabled(tmp_path):
    s = session_over(tmp_path, (DATA / "trace-6.18-collapse-polling.txt").read_text())
    s.enabled.remove("csd/csd_queue_cpu")
    assert not s.counts("r0-workload").queue_traced


def test_events_outside_a_phase_are_not_counted(tmp_path):
    lines = (DATA / "trace-6.18-collapse-polling.txt").read_text().splitlines()
    s = session_over(tmp_path, "\n".join(lines[1:-1]) + "\n")  # markers removed
    assert s.counts("r0-workload").counts == PhaseCounts().counts


def test_cpumask_events_count_once_per_target():
    body = "cpumask=00000000,0000000c callsite=smp_call_function_many_cond+0x1b0/0x4e0 callback=generic_smp_call_function_interrupt+0x0/0x20"
    assert parse_hex_cpumask("00000000,0000000c") == [2, 3]
    assert parse_hex_cpumask("00000001,00000000") == [32]
    assert parse_hex_cpumask("zz") == []
    keys = parse_event("ipi_send_cpumask", body, 0)
    assert keys == [("ipi_send_cpumask", "generic_smp_call_function_interrupt", "smp_call_function_many_cond", 2),
                    ("ipi_send_cpumask", "generic_smp_call_function_interrupt", "smp_call_function_many_cond", 3)]
    assert parse_event("csd_queue_cpu", "cpu=3 callsite=smp_call_function+0x28/0x60 func=tlb_remove_table_smp_sync "
                       "csd=0000000006", 0) == [("csd_queue_cpu", "tlb_remove_table_smp_sync", "smp_call_function", 3)]
    assert parse_event("sched_switch", "prev_comm=x", 0) == []
