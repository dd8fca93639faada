"""The idle workload: no operation, only the idle control windows (spec.py, driver.py)."""
