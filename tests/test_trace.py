"""The trace parser on a recorded trace: what the kernel queued against what arrived."""

from __future__ import annotations

from pathlib import Path

from tlbprobe.measure.trace import (RECEIVER_EVENT_BYTES, PhaseCounts, TracePlan, TraceSession, parse_event,
                            parse_hex_cpumask, sync_filter)

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


def test_a_refused_marker_marks_the_phase_lost_and_does_not_raise(tmp_path):
    """The 4 GiB / 64-vCPU run died here: trace_marker refused with EBADF when the sending
    CPU's buffer was full. Now the phase is marked, and the run goes on."""
    s = session_over(tmp_path, "")
    (tmp_path / "trace_marker").mkdir()  # any write to it fails (EISDIR), as a full buffer's EBADF
    warnings = []
    s.log = warnings.append
    s.open_phase("r0-workload")
    s.begin("r0-workload")
    s.end("r0-workload")
    c = s.counts("r0-workload")
    assert not c.ring_complete and "begin marker was refused" in c.error
    assert warnings and "received counts are short" in warnings[0] and "CAL minus TLB" in warnings[0]
    # the next phase starts clean: its own markers decide, not the failed one's
    (tmp_path / "trace_marker").rmdir()
    (tmp_path / "trace_marker").write_text("")
    s.open_phase("r1-idle")
    s.begin("r1-idle")
    assert s.counts("r1-idle").error is None


def test_the_in_kernel_sync_count_replaces_the_ring_buffers():
    c = PhaseCounts(queue_traced=True, sync_queued=8064)
    c.counts.update({("csd_queue_cpu", "flush_tlb_func", "x", 1): 3,
                     ("csd_queue_cpu", "tlb_remove_table_smp_sync", "x", 1): 5})
    c.lost = 120
    assert c.queued([1, 2]) == {"tlb_remove_table_smp_sync": 8064, "flush_tlb_func": 3}
    assert not c.ring_complete


def test_buffers_are_sized_from_the_job_and_the_counter_spares_the_sender():
    # the crash: 2048 collapses on 64 CPUs queue 129,024 calls on the driver CPU
    ring = TracePlan(tuple(range(64)), 0, 2048, sync_counter="trace")
    assert ring.driver_kb(counter=False) * 1024 >= 2048 * 63 * RECEIVER_EVENT_BYTES
    assert ring.driver_kb(counter=True) < ring.driver_kb(counter=False) / 3
    # the seed at 256 CPUs: every receiver holds its 10,240 sync entries twice over
    seed = TracePlan(tuple(range(256)), 0, 10240)
    assert seed.per_cpu_kb() * 1024 >= 2 * 10240 * RECEIVER_EVENT_BYTES
    assert seed.total_kb(counter=True) < 512 * 1024  # KiB: under 512 MiB for 256 CPUs
    assert TracePlan((0, 1), 0, 128, buffer_kb=4).total_kb(True) == 8  # what the user gives
    assert sync_filter(3, 0xffffffff8160f1c0) == "func == 0xffffffff8160f1c0 && cpu != 3"
    assert sync_filter(3, 0xffffffff8160f1c0, negate=True) == "func != 0xffffffff8160f1c0"


def test_the_fast_line_split_agrees_with_the_full_regex():
    """split_line's fast path must give what _LINE gives, and hand what it cannot split
    cleanly (a task name with ': ' or brackets in it) to the regex."""
    from tlbprobe.measure.trace import _LINE, split_line

    lines = [
        "  python3-4242    [000] d..2. 100.000000: csd_queue_cpu: cpu=1 callsite=smp_call_function_many_cond+0x1a5/0x520 func=tlb_remove_table_smp_sync+0x0/0x10 csd=00000000d8e1c6b3",
        "          <idle>-0       [063] d.h1. 5.500001: csd_function_entry: func=flush_tlb_func+0x0/0x1c0 csd=0",
        " weird: name-12 [003] .... 5.000001: ipi_send_cpu: cpu=2 callsite=a callback=b",
        " a]b [x-7 (  12) [001] d.h1. 5.5: csd_function_entry: func=f csd=0",
        "  <idle>-0       [001] 5.500000: sched_wake_idle_without_ipi: cpu=1",
        "  bash-77 [002] ..... 9.1: tracing_mark_write: tlbprobe-phase begin r0-idle",
        "# tracer: nop", "", "CPU:3 [LOST 12 EVENTS]", "garbage [x] 1.0: : :",
    ]
    for line in lines:
        m = _LINE.match(line)
        want = (int(m.group("cpu")), m.group("event"), m.group("body")) if m else None
        assert split_line(line) == want, line
