"""Remote TFF workers: the fedlab-worker service."""
