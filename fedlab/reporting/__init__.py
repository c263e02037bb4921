"""fedlab-report: compares the runs of a sweep from their files (no TensorFlow)."""
