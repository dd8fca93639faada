"""Workflows over kernels and guests: the QEMU A/B (repro) and the CPU-count sweep."""
