"""Benchmarks with committed results (see bench/results/). Run each as ``python -m bench.<name>``."""
