"""Benchmarks: each script prints the figures its issue names."""
