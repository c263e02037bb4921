"""What a run writes: the recorder, its tables, checkpoints, the run directory's own files, the communication ledger."""
