"""Bisection over packaged kernels: since when a failure happens, and where
it was fixed (farm bisect)."""
