"""Centers: the configured centers, placement, computing power and its descriptor,
health and probes, the access evaluation."""
