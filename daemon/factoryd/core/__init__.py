"""The pure core: what a task is, how it moves between phases, when it fires, how a run ended."""
