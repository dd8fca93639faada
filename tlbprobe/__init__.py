"""tlbprobe: measure the IPIs and RT latency that kernel page-table operations cost."""

__version__ = "0.1.0"
