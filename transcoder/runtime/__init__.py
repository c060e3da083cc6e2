"""The worker: its loop, the one decision, liveness, the pipeline, the wiring."""
