"""The khugepaged workload: the background collapse every machine with THP runs, and its
broadcasts (spec.py: what it is and the rate its knobs allow; driver.py: the run)."""
