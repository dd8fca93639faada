"""The collect stage: the job, the collector that runs it, and the summary it writes."""
