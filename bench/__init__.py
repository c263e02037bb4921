"""fedlab's benchmarks: plain scripts that print measured figures beside their goals (`make bench`)."""
