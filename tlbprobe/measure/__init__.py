"""What reads the kernel: /proc snapshots (procfs), the host's facts (host), tracefs
attribution (trace) and the in-kernel sync counter (perfcount), CAL and TLB time series
(timeseries), cyclictest (latency), and the `Observer` protocol every per-phase
observer implements (observer).

Nothing here imports the report, the run directory's reader or the QEMU code; the
collector (tlbprobe/run/collector.py) and the workloads use these modules."""
