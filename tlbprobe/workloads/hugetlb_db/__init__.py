"""The hugetlb-db workload: a database's shared hugetlb segment with client sessions that
come and go (spec.py: what it is and its model; driver.py: the run)."""
