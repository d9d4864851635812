"""The fleet's tables, created and migrated by the daemon, versioned.

`MIGRATIONS[n]` takes the schema from version n to n+1. Every host runs
`migrate` when it connects; an advisory lock makes concurrent starts apply
each step once, and a database already at a newer version than this
factoryd knows is refused (an old host must not write a format it does not
understand) rather than guessed at.

Instants are epoch seconds (float8) on the database's clock, read through
`fleet_now()`: holds, leases and heartbeats are compared with one clock, so
skew between hosts does not matter. `fleet_now()` adds the session setting
`factoryd.clock_offset` (seconds, unset = 0), the seam tests use to move
the database's time instead of sleeping.
"""

from __future__ import annotations

from factoryd.state.fleet.db import Conn, Database
from factoryd.state.fleet.errors import FleetSchemaError

SCHEMA_VERSION = 2
#: pg_advisory_xact_lock key of schema migrations ("factoryd" in ASCII, truncated).
_LOCK_KEY = 0x66616374_6F727964 & 0x7FFFFFFFFFFFFFFF

MIGRATIONS: dict[int, list[str]] = {
    0: [
        """CREATE OR REPLACE FUNCTION fleet_now() RETURNS float8 LANGUAGE sql VOLATILE AS $$
            SELECT extract(epoch FROM clock_timestamp())::float8
                 + coalesce(nullif(current_setting('factoryd.clock_offset', true), '')::float8, 0)
        $$""",
        # One row per pool: its spec (as the last host to sync it had it)
        # and its shared numbers. Window bounds are stored, so every host
        # reads the window the first host to see a reset computed.
        """CREATE TABLE fleet_pools (
            name text PRIMARY KEY,
            unit text NOT NULL,
            cap float8 NOT NULL,
            window_months int NOT NULL DEFAULT 0,
            window_seconds float8 NOT NULL DEFAULT 0,
            anchor float8 NOT NULL DEFAULT 0,
            limit_backoff float8 NOT NULL,
            limit_backoff_max float8 NOT NULL,
            used float8 NOT NULL DEFAULT 0,
            window_start float8,
            window_end float8,
            limited_until float8,
            limited_reason text NOT NULL DEFAULT '',
            limited_by text NOT NULL DEFAULT '',
            strikes int NOT NULL DEFAULT 0,
            spec_by text NOT NULL DEFAULT '',
            updated_at float8 NOT NULL
        )""",
        """CREATE TABLE fleet_holds (
            res_id text NOT NULL,
            pool text NOT NULL REFERENCES fleet_pools (name) ON DELETE CASCADE,
            amount float8 NOT NULL,
            arm text NOT NULL,
            task text NOT NULL,
            host text NOT NULL,
            created_at float8 NOT NULL,
            expires_at float8 NOT NULL,
            PRIMARY KEY (res_id, pool)
        )""",
        """CREATE INDEX fleet_holds_pool ON fleet_holds (pool, expires_at)""",
        # A reservation is settled once: a replayed commit (from a host's
        # outbox after an outage) finds its row and changes nothing.
        """CREATE TABLE fleet_settlements (
            res_id text PRIMARY KEY,
            kind text NOT NULL CHECK (kind IN ('commit', 'rollback')),
            host text NOT NULL,
            actual jsonb NOT NULL,
            held boolean NOT NULL,
            at float8 NOT NULL
        )""",
        """CREATE INDEX fleet_settlements_at ON fleet_settlements (at)""",
        """CREATE TABLE fleet_queue (
            id bigserial PRIMARY KEY,
            sub_id text NOT NULL UNIQUE,
            idem_key text UNIQUE,
            label text NOT NULL,
            request jsonb NOT NULL,
            source text NOT NULL DEFAULT '',
            priority int NOT NULL DEFAULT 0,
            state text NOT NULL
                CHECK (state IN ('queued', 'claimed', 'done', 'failed', 'cancelled')),
            attempt int NOT NULL DEFAULT 0,
            host text,
            lease_until float8,
            outcome text NOT NULL DEFAULT '',
            reason text NOT NULL DEFAULT '',
            created_at float8 NOT NULL,
            updated_at float8 NOT NULL
        )""",
        """CREATE INDEX fleet_queue_open ON fleet_queue (priority DESC, id)
            WHERE state IN ('queued', 'claimed')""",
        """CREATE TABLE fleet_hosts (
            name text PRIMARY KEY,
            started_at float8 NOT NULL,
            last_seen float8 NOT NULL,
            pid int NOT NULL DEFAULT 0,
            version text NOT NULL DEFAULT '',
            info jsonb NOT NULL DEFAULT '{}'
        )""",
        # Fleet-wide learning per (arm, task type): counts and sums add up
        # across hosts; `ema` is the success average in arrival order.
        """CREATE TABLE fleet_learning (
            arm text NOT NULL,
            task_type text NOT NULL,
            ok bigint NOT NULL DEFAULT 0,
            failed bigint NOT NULL DEFAULT 0,
            ok_seconds float8 NOT NULL DEFAULT 0,
            tokens bigint NOT NULL DEFAULT 0,
            ema float8 NOT NULL DEFAULT 0,
            last_at float8 NOT NULL,
            last_host text NOT NULL,
            PRIMARY KEY (arm, task_type)
        )""",
    ],
    1: [
        # `fleet = "once"` tasks: a scheduled fire happens once per fleet...
        """CREATE TABLE fleet_fires (
            task text NOT NULL,
            due float8 NOT NULL,
            host text NOT NULL,
            at float8 NOT NULL,
            PRIMARY KEY (task, due)
        )""",
        # ...and a service runs on one host at a time, under a lease.
        """CREATE TABLE fleet_singletons (
            task text PRIMARY KEY,
            host text NOT NULL,
            attempt int NOT NULL,
            lease_until float8 NOT NULL
        )""",
    ],
}


def migrate(db: Database) -> int:
    """Bring the schema to SCHEMA_VERSION; return the version found before."""
    return db.run(_migrate)


def _migrate(conn: Conn) -> int:
    conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
    conn.execute("CREATE TABLE IF NOT EXISTS fleet_meta (key text PRIMARY KEY, value text)")
    row = conn.execute("SELECT value FROM fleet_meta WHERE key = 'schema_version'").fetchone()
    found = int(str(row[0])) if row else 0
    if found > SCHEMA_VERSION:
        raise FleetSchemaError(
            f"the fleet database has schema version {found}, newer than this factoryd "
            f"understands ({SCHEMA_VERSION}); upgrade factoryd on this host"
        )
    version = found
    while version < SCHEMA_VERSION:
        for statement in MIGRATIONS[version]:
            conn.execute(statement.encode())
        version += 1
    conn.execute(
        "INSERT INTO fleet_meta (key, value) VALUES ('schema_version', %s) "
        "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        (str(version),),
    )
    return found
