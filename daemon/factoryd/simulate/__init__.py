"""The routing simulator: the daemon's own router driven by an injected clock.

A scenario (arrivals, hidden truth about each arm, what providers really
allow, drift and outages) is played against the same RoutingEngine, pool
ledger, limit holds, quality tracker and telemetry a live daemon uses, once
per policy and seed, so a router can be judged against simple baselines and
a hindsight oracle before real money is spent on it.
"""
