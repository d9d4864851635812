"""What survives the daemon: the SQLite journal and the batches a pass writes to it."""
