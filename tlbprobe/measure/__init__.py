"""What reads the kernel: /proc snapshots (procfs), the host's facts (host), tracefs
attribution (trace) and the in-kernel sync counter (perfcount), CAL and TLB time series
(timeseries), and the observers that run beside every phase: cyclictest (latency), the
broadcast's handler and wait times (cost), a work loop on the other CPUs (victim), with
the `Observer` protocol they implement (observer).

Nothing here imports the report, the run directory's reader or the QEMU code; the
collector (tlbprobe/run/collector.py) and the workloads use these modules."""
