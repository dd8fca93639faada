"""The collapse workload: MADV_COLLAPSE, one sync broadcast per collapsed 2 MiB range
(spec.py: what it is; driver.py: what runs as root)."""
