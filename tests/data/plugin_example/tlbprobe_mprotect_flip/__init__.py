"""mprotect-flip, a tlbprobe workload in a package of its own (spec.py: what it is;
driver.py: what runs as root)."""
