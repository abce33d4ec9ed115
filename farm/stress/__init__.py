"""Stress: writer and runner processes pinned to CPUs, and the oracle."""
