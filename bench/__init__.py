"""Benchmarks: each prints ratios against a named baseline last."""
