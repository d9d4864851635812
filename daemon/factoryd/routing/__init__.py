"""The routing engine: pure code that picks an arm for a run.

Nothing here reads a clock, a file or a socket: callers pass `now` (wall
time, epoch seconds) and get back a decision that carries its rationale.
"""
