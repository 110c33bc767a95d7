"""Benchmark scripts (each prints a table and writes JSON); `run.py` runs them all at once."""
