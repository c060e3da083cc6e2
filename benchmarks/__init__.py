"""Reproducible benchmarks on the samples against plain-ffmpeg baselines (python -m benchmarks)."""
