"""The reconcile loop: the one owner of task and run state, and start-up recovery."""
