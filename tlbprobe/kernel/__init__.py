"""Guest kernels: Debian linux-source (or a tree) + config fragments + patches -> a cached bzImage."""
