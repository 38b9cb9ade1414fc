"""Benchmarks that measure qis_lib in one run and write their figures under results/."""
