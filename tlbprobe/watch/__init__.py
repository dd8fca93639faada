"""`tlbprobe watch`: how often a machine sends the page-table sync broadcast, and why,
beside whatever it runs, for hours.

The modules, one concept each (doc/watch.md says what every figure means):

* config.py    the options, checked once (WatchConfig)
* route.py     what this kernel allows: the exact counter, and which stack source
               (hist trigger, stacktrace trigger, none)
* counters.py  the exact counts per interval: sync calls queued (IPIs), broadcasts,
               the watcher's own cross-CPU calls (perf counters), CAL and TLB per CPU
* origins.py   a broadcast's kernel stack -> its origin (khugepaged, MADV_COLLAPSE, ...)
* stacks.py    the stacktrace trigger in a private tracefs instance, and its parser
* hist.py      the hist trigger keyed by stack, where the kernel has one, and its parser
* interval.py  one interval's record: the counts, the stacks matched to them
* recorder.py  the watch directory: records appended, rotated and compacted by size
* metrics.py   Prometheus: the textfile collector file and the --listen endpoint
* watcher.py   the loop: signals, hotplug, a second tracer, every setting restored
"""
