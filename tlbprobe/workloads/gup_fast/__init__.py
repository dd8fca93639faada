"""The gup-fast workload: GUP-fast's throughput, the other side of the trade (spec.py;
driver.py and gupbench.c run it)."""
