"""Verification: parity against the source runtime, metrics, NPU audit."""
