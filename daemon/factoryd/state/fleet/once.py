"""Fleet-wide tasks (`fleet = "once"`): a fire once per fleet, a service on one host.

A scheduled task's fire is claimed by inserting (task, due time): the
first host to insert runs it, the others see the row and skip that fire.
The due time is the cron instant itself (the same on every host that
computes it from the same schedule), not a host's clock.

A service is held by one host under a lease, like a queue claim: `hold`
takes it when it is free or its holder's lease lapsed (bumping `attempt`,
the fencing token), and renews it for the current holder; any other host
gets None and must not run it. When the holder dies, its lease lapses and
the next host to ask takes the service over.
"""

from __future__ import annotations

from dataclasses import dataclass

from factoryd.state.fleet.db import Conn, Database


@dataclass(frozen=True, slots=True)
class Holding:
    task: str
    attempt: int
    lease_until: float
    #: The host whose lease lapsed, when this hold took the service over.
    took_from: str | None


class FleetOnce:
    def __init__(self, db: Database, host: str, lease: float = 30.0) -> None:
        self.db = db
        self.host = host
        self.lease = lease

    def claim_fire(self, task: str, due: float) -> bool:
        """True if this host is the one to run `task`'s fire due at `due`."""
        return self.db.run(
            lambda conn: (
                conn.execute(
                    "INSERT INTO fleet_fires (task, due, host, at) "
                    "VALUES (%s, %s, %s, fleet_now()) ON CONFLICT DO NOTHING RETURNING 1",
                    (task, due, self.host),
                ).fetchone()
                is not None
            )
        )

    def hold(self, task: str, attempt: int | None = None) -> Holding | None:
        """Take or renew the service `task`; None while another host holds it.

        Renewing quotes the `attempt` this host was given; a stale one (the
        service moved while this host was away) gets None, and the host must
        stop its copy of the service.
        """

        def op(conn: Conn) -> Holding | None:
            row = conn.execute(
                "SELECT host, attempt, lease_until > fleet_now() FROM fleet_singletons "
                "WHERE task = %s FOR UPDATE",
                (task,),
            ).fetchone()
            if row is None:
                new = conn.execute(
                    "INSERT INTO fleet_singletons (task, host, attempt, lease_until) "
                    "VALUES (%s, %s, 1, fleet_now() + %s) ON CONFLICT DO NOTHING "
                    "RETURNING attempt, lease_until",
                    (task, self.host, self.lease),
                ).fetchone()
                return None if new is None else Holding(task, 1, float(new[1]), None)
            holder, current, live = str(row[0]), int(row[1]), bool(row[2])
            # This host holding it under another attempt is this host's previous
            # daemon (one daemon per host): it is gone, so take over at once.
            if holder == self.host and attempt == current:
                renewed = conn.execute(
                    "UPDATE fleet_singletons SET lease_until = fleet_now() + %s WHERE task = %s "
                    "RETURNING lease_until",
                    (self.lease, task),
                ).fetchone()
                assert renewed is not None
                return Holding(task, current, float(renewed[0]), None)
            if live and holder != self.host:
                return None
            taken = conn.execute(
                "UPDATE fleet_singletons SET host = %s, attempt = attempt + 1, "
                "lease_until = fleet_now() + %s WHERE task = %s RETURNING attempt, lease_until",
                (self.host, self.lease, task),
            ).fetchone()
            assert taken is not None
            return Holding(task, int(taken[0]), float(taken[1]), holder)

        return self.db.run(op)

    def let_go(self, task: str, attempt: int) -> bool:
        """Give the service up (shutting down): another host may take it at once."""
        return self.db.run(
            lambda conn: (
                conn.execute(
                    "DELETE FROM fleet_singletons WHERE task = %s AND host = %s AND attempt = %s",
                    (task, self.host, attempt),
                ).rowcount
                > 0
            )
        )
