"""Fleet mode: several hosts share pools, limits, learning and one queue in PostgreSQL.

Without a `[fleet]` table nothing here is imported and a host runs alone on
its SQLite journal. With one, `FleetStore` (store.py) is the daemon's
handle: the shared pool ledger (ledger.py), the durable queue (queue.py),
hosts and heartbeats (hosts.py), fleet-wide learning (learning.py),
fleet-wide fires and services (once.py), the local outbox for settlements
made during an outage (outbox.py) and the operator's outage allowance
(allowance.py), over one connection layer with backoff (db.py) and a
versioned schema (schema.py). Pure helpers for the daemon: its own lease
deadlines (leases.py) and the router's view of the fleet's pools (mirror.py).
Every operation raises `FleetUnavailable` (errors.py) when the database
cannot be reached, and nothing else for an outage.
"""
