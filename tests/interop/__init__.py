"""Interop tests: the official iii SDKs (PyPI ``iii-sdk`` 0.25.0, npm ``iii-sdk`` 0.22.1) against our engine."""
