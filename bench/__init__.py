"""Benchmarks that print figures (run ``python -m bench``); none of them is a test."""
