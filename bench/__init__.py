"""Benchmarks: each script prints its figures and ends with one summary line (docs/benchmarks.md)."""
