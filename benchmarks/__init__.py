"""Benchmarks: scripts that measure ratios side by side and write benchmarks/results/."""
