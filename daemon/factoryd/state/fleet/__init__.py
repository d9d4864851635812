"""Fleet mode: several hosts share pools, limits, learning and one queue in PostgreSQL.

Without a `[fleet]` table nothing here is imported and a host runs alone on
its SQLite journal. With one, `FleetStore` (store.py) is the daemon's
handle: the shared pool ledger (ledger.py), the durable queue (queue.py),
hosts and heartbeats (hosts.py), fleet-wide learning (learning.py), the
local outbox for settlements made during an outage (outbox.py), over one
connection layer with backoff (db.py) and a versioned schema (schema.py).
Every operation raises `FleetUnavailable` (errors.py) when the database
cannot be reached, and nothing else for an outage.
"""
