"""Benchmarks of hpcfed against real services (the testbed); see benchmarks/README.md."""
