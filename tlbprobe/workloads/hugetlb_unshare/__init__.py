"""The hugetlb-unshare workload: hugetlb PMD-table unsharing, the second operation that
sends the sync broadcast (spec.py: what it is and its model; driver.py: the run)."""
