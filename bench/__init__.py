"""Benchmarks of the gateway (not tests): run them with ``python -m bench.<name>``."""
